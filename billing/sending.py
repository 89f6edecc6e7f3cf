"""Dispatching a queue and sending one contact: the rules the actors run.

``plan_dispatch`` books send slots for the next due contacts (pending ->
queued) and says which ``send_contact`` messages to enqueue with which delay.
``send_one`` claims a queued contact (queued -> sending) with one conditional
UPDATE, calls the gateway, and records the outcome. A redelivered message finds
the contact no longer ``queued`` and does nothing, so the actors are
idempotent.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from peewee import Case

from billing import pacing
from billing.clock import utcnow
from billing.db import locked, write_transaction
from billing.models import Contact, Event, Instance, Queue, Tenant
from billing.providers import GatewayError, gateway_for
from billing.queues import complete_if_done
from billing.states import ContactStatus, QueueStatus
from billing.tenants import sending_instances

log = structlog.get_logger(__name__)

#: Dispatch wakes up this long before its last booked slot is used, so the next
#: batch is booked before the instance would go idle.
DISPATCH_LEAD = timedelta(seconds=2)

#: pause_reason when a tenant has no instance able to send.
NO_INSTANCE_REASON = "Nenhuma instância disponível"


@dataclass
class DispatchPlan:
    """What a dispatch pass decided.

    Parameters:
      sends: (contact id, delay in seconds) to enqueue as send_contact.
      next_dispatch_in: seconds until dispatch should run again, or None.
    """

    sends: list[tuple[int, float]] = field(default_factory=list)
    next_dispatch_in: float | None = None


def plan_dispatch(queue_id, *, horizon: timedelta, batch_size: int, now: datetime | None = None) -> DispatchPlan:
    """Book slots for the queue's next due contacts.

    Parameters:
      queue_id: the queue to advance.
      horizon: book only slots that start within this time.
      batch_size: book at most this many contacts.
      now: the current time (tests).
    """
    now = now or utcnow()
    queue = Queue.get_or_none(Queue.id == queue_id)
    if queue is None or queue.status not in QueueStatus.RUNNING:
        return DispatchPlan()

    instances = sending_instances(queue.tenant_id)
    if not instances:
        Queue.update(status=QueueStatus.PAUSED, pause_reason=NO_INSTANCE_REASON, updated_at=now).where(
            (Queue.id == queue.id) & Queue.status.in_(QueueStatus.RUNNING)
        ).execute()
        log.warning("queue paused: no instance", queue_id=str(queue.id))
        return DispatchPlan()

    plan = DispatchPlan()
    with write_transaction():
        Queue.update(status=QueueStatus.PROCESSING, started_at=now, updated_at=now).where(
            (Queue.id == queue.id) & (Queue.status == QueueStatus.PENDING)
        ).execute()
        due = list(
            locked(
                Contact.select(Contact.id)
                .where(
                    (Contact.queue == queue.id)
                    & (Contact.status == ContactStatus.PENDING)
                    & ((Contact.next_attempt_at.is_null()) | (Contact.next_attempt_at <= now))
                )
                .order_by(Contact.position)
                .limit(batch_size),
                skip_locked=True,
            ).tuples()
        )
        booked: list[tuple[int, int, datetime]] = []
        remaining = [contact_id for (contact_id,) in due]
        for instance in instances:
            if not remaining:
                break
            slots = pacing.book_slots(instance.id, now=now, horizon=horizon, limit=len(remaining))
            booked.extend((contact_id, instance.id, slot) for contact_id, slot in zip(remaining, slots))
            remaining = remaining[len(slots):]
        if booked:
            ids = [contact_id for contact_id, _, _ in booked]
            Contact.update(
                status=ContactStatus.QUEUED,
                slot_at=Case(Contact.id, [(c, s) for c, _, s in booked]),
                instance=Case(Contact.id, [(c, i) for c, i, _ in booked]),
                updated_at=now,
            ).where(Contact.id.in_(ids) & (Contact.status == ContactStatus.PENDING)).execute()
            plan.sends = [(c, max(0.0, (s - now).total_seconds())) for c, _, s in booked]

    more_waiting = bool(remaining) or len(due) == batch_size
    if more_waiting and booked:
        last_slot = max(s for _, _, s in booked)
        plan.next_dispatch_in = max(0.0, (last_slot - DISPATCH_LEAD - now).total_seconds())
    elif more_waiting:
        # Every instance is booked beyond the horizon (other queues share it);
        # its bookings end within a horizon, so half of one frees some up.
        plan.next_dispatch_in = horizon.total_seconds() / 2
    elif not booked:
        complete_if_done(queue.id)
    return plan


class Outcome(enum.Enum):
    SKIPPED = "skipped"  # not ours to send (already claimed, queue paused or cancelled)
    SENT = "sent"
    RETRY = "retry"  # transient failure; try again after a backoff
    FAILED = "failed"


@dataclass
class SendReport:
    outcome: Outcome
    contact_id: int
    queue_id: str = ""
    reason: str = ""


def claim(contact_id: int, *, now: datetime) -> bool:
    """queued -> sending for a contact whose queue is running; True if ours."""
    running = Queue.select(Queue.id).where(Queue.status.in_(QueueStatus.RUNNING))
    claimed = (
        Contact.update(status=ContactStatus.SENDING, attempts=Contact.attempts + 1, claimed_at=now, updated_at=now)
        .where((Contact.id == contact_id) & (Contact.status == ContactStatus.QUEUED) & Contact.queue.in_(running))
        .execute()
    )
    if claimed:
        return True
    # A paused queue gives its booked contacts back, to be booked again on resume.
    stopped = Queue.select(Queue.id).where(Queue.status.in_((QueueStatus.PAUSED, QueueStatus.INSTANCE_DOWN)))
    Contact.update(status=ContactStatus.PENDING, slot_at=None, updated_at=now).where(
        (Contact.id == contact_id) & (Contact.status == ContactStatus.QUEUED) & Contact.queue.in_(stopped)
    ).execute()
    return False


def send_one(contact_id: int, *, now: datetime | None = None) -> SendReport:
    """Claim, send and record one contact.

    Returns:
      A report whose ``outcome`` tells the caller (the actor) whether to retry.
    """
    now = now or utcnow()
    if not claim(contact_id, now=now):
        return SendReport(Outcome.SKIPPED, contact_id)
    contact = (
        Contact.select(Contact, Instance, Tenant)
        .join(Instance, on=(Contact.instance == Instance.id))
        .switch(Contact)
        .join(Tenant, on=(Contact.tenant == Tenant.id))
        .where(Contact.id == contact_id)
        .get()
    )
    queue_id = str(contact.queue_id)
    try:
        result = gateway_for(contact.instance).send_text(
            phone=contact.phone, chat_id=contact.chat_id, text=contact.message, contact_id=contact.id
        )
    except GatewayError as exc:
        return _record_failure(contact, exc, queue_id=queue_id)

    done_at = utcnow()
    with write_transaction():
        Contact.update(
            status=ContactStatus.SENT,
            provider_message_id=result.provider_message_id,
            chat_id=result.chat_id or contact.chat_id,
            reason="",
            sent_at=done_at,
            updated_at=done_at,
        ).where((Contact.id == contact.id) & (Contact.status == ContactStatus.SENDING)).execute()
        Event.create(
            contact=contact.id,
            kind="sent",
            detail={"provider_message_id": result.provider_message_id, "instance": contact.instance.name},
            created_at=done_at,
        )
    complete_if_done(contact.queue_id)
    return SendReport(Outcome.SENT, contact.id, queue_id)


def _record_failure(contact: Contact, error: GatewayError, *, queue_id: str) -> SendReport:
    now = utcnow()
    final = not error.transient or contact.attempts >= contact.tenant.max_attempts
    with write_transaction():
        if final:
            Contact.update(
                status=ContactStatus.FAILED, reason=error.reason, finished_at=now, updated_at=now
            ).where((Contact.id == contact.id) & (Contact.status == ContactStatus.SENDING)).execute()
        else:
            # Back to queued so the retried message can claim it again.
            Contact.update(status=ContactStatus.QUEUED, reason=error.reason, updated_at=now).where(
                (Contact.id == contact.id) & (Contact.status == ContactStatus.SENDING)
            ).execute()
        Event.create(
            contact=contact.id,
            kind="failed" if final else "send_error",
            detail={"reason": error.reason, "attempt": contact.attempts, "transient": error.transient},
            created_at=now,
        )
    if final:
        complete_if_done(contact.queue_id)
        return SendReport(Outcome.FAILED, contact.id, queue_id, error.reason)
    return SendReport(Outcome.RETRY, contact.id, queue_id, error.reason)
