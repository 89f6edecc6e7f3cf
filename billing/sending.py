"""Dispatching a queue and sending one contact: the rules the actors run.

``plan_dispatch`` books send slots for the next due contacts (pending ->
queued) and says which ``send_contact`` messages to enqueue with which delay.
``send_one`` claims a queued contact (queued -> sending) with one conditional
UPDATE, calls the gateway, and records the outcome. A redelivered message finds
the contact no longer ``queued`` and does nothing, so the actors are
idempotent.

Waits longer than a broker should hold a message (the next business-hours
window, a daily cap, a retry hours later) are written to the database
(``queue.resume_at``, ``contact.next_attempt_at``) for the scheduler.
"""
from __future__ import annotations

import enum
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from peewee import Case, fn

from billing import callbacks, health, numbers, pacing, windows
from billing.clock import utcnow
from billing.db import locked, write_transaction
from billing.hours import calendar_for_recipient
from billing.models import Campaign, Contact, Event, Instance, Queue, Tenant
from billing.providers import GatewayError, gateway_for
from billing.queues import complete_if_done
from billing.states import ContactStatus, QueueStatus
from billing.tenants import sending_instances

log = structlog.get_logger(__name__)

#: Dispatch wakes up this long before its last booked slot is used, so the next
#: batch is booked before the instance would go idle.
DISPATCH_LEAD = timedelta(seconds=2)

#: A dispatch arriving this close to its chain's scheduled time is that chain.
CHAIN_TOLERANCE = timedelta(seconds=1)

#: The first failed attempts are retried by the broker (Dramatiq's Retries,
#: backoff of seconds to minutes); later ones wait in the database.
QUICK_RETRIES = 2

#: Waits before attempt 4, 5, 6... (the last value repeats): long enough for a
#: gateway outage to pass, short enough for a reminder to stay relevant.
DATABASE_RETRY_DELAYS = (timedelta(minutes=15), timedelta(hours=1), timedelta(hours=4))

#: A retried send must wait for a slot of the instance's pace; within this
#: much of now, it goes at once.
SLOT_TOLERANCE = timedelta(seconds=1)

#: The longest a message may wait in the broker (RabbitMQ redelivers messages
#: held past its consumer_timeout; Dramatiq keeps delayed ones in memory).
MAX_BROKER_DELAY = timedelta(minutes=5)

#: A send that finds the instance's floor closed waits this long at most in
#: the worker thread; a longer wait goes back to the broker as a delay.
MAX_FLOOR_SLEEP = timedelta(seconds=2)

#: How often a send may find the floor closed before it goes back to the
#: broker, and the random spread of its waits (seconds).
MAX_FLOOR_TRIES = 20
FLOOR_JITTER_SECONDS = 0.02

#: pause_reason when a daily cap stopped the queue.
DAILY_CAP_REASON = "Limite diário de envios atingido"

#: pause_reason when the tenant has no hours at all in which to send.
NO_HOURS_REASON = "Nenhum horário comercial configurado"


@dataclass
class DispatchPlan:
    """What a dispatch pass decided.

    Parameters:
      sends: (contact id, booked slot as naive UTC) to enqueue as send_contact;
        the delay is computed as each message is published, so the time spent
        publishing a batch does not push the later sends back.
      next_dispatch_in: seconds until dispatch should run again, or None.
      callbacks: callback deliveries to hand to the broker.
    """

    sends: list[tuple[int, datetime]] = field(default_factory=list)
    next_dispatch_in: float | None = None
    callbacks: list[str] = field(default_factory=list)


def _pause(queue_id, *, kind: str, reason: str, resume_at: datetime | None, now: datetime, status=QueueStatus.PAUSED) -> None:
    Queue.update(status=status, pause_kind=kind, pause_reason=reason, resume_at=resume_at, next_dispatch_at=None,
                 updated_at=now).where(
        (Queue.id == queue_id) & Queue.status.in_(QueueStatus.RUNNING)
    ).execute()


def plan_dispatch(
    queue_id, *, horizon: timedelta, batch_size: int, now: datetime | None = None, rng: random.Random | None = None
) -> DispatchPlan:
    """Book slots for the queue's next due contacts.

    Parameters:
      queue_id: the queue to advance.
      horizon: book only slots that start within this time.
      batch_size: book at most this many contacts.
      now: the current time (tests).
      rng: randomness of the pace (tests pass a seeded one).
    """
    now = now or utcnow()
    row = (
        Queue.select(Queue, Campaign.type, Tenant)
        .join(Campaign, on=(Queue.campaign == Campaign.id))
        .switch(Queue)
        .join(Tenant, on=(Queue.tenant == Tenant.id))
        .where(Queue.id == queue_id)
        .first()
    )
    if row is None or row.status not in QueueStatus.RUNNING:
        return DispatchPlan()
    if row.next_dispatch_at is not None and row.next_dispatch_at > now + CHAIN_TOLERANCE:
        # This queue's chain runs again soon: an extra trigger (recovery, a
        # given-back contact, a redelivery) must not start a second chain.
        return DispatchPlan()
    tenant, template_type = row.tenant, row.campaign.type

    per_recipient = tenant.recipient_timezone and template_type in windows.HOURS_BOUND_TYPES
    window = windows.ALWAYS if per_recipient else windows.window_for(tenant, template_type, now=now)
    if not window.open:
        reason = windows.OUTSIDE_HOURS_REASON if window.next_open else NO_HOURS_REASON
        _pause(row.id, kind=health.PAUSE_HOURS, reason=reason, resume_at=window.next_open, now=now)
        log.info("queue waits for business hours", queue_id=str(row.id), resume_at=str(window.next_open))
        return DispatchPlan()

    instances = sending_instances(tenant.id)
    if not instances:
        _pause(row.id, kind=health.PAUSE_INSTANCE, reason=health.INSTANCE_DOWN_REASON, resume_at=None, now=now,
               status=QueueStatus.INSTANCE_DOWN)
        log.warning("queue waits for an instance", queue_id=str(row.id))
        return DispatchPlan()

    until = now + horizon
    if window.until is not None and window.until <= until:
        until = window.until - timedelta(microseconds=1)  # a slot at the window's end is outside it
    local_day = windows.local_day(tenant.timezone)
    plan = DispatchPlan()
    with write_transaction():
        Queue.update(status=QueueStatus.PROCESSING, started_at=now, updated_at=now).where(
            (Queue.id == row.id) & (Queue.status == QueueStatus.PENDING)
        ).execute()
        due = [
            contact_id
            for (contact_id,) in locked(
                Contact.select(Contact.id)
                .where(
                    (Contact.queue == row.id)
                    & (Contact.status == ContactStatus.PENDING)
                    & ((Contact.next_attempt_at.is_null()) | (Contact.next_attempt_at <= now))
                )
                .order_by(Contact.position)
                .limit(batch_size),
                skip_locked=True,
            ).tuples()
        ]
        if per_recipient:
            due, until, _ = _recipients_open_now(tenant, due, now=now, until=until)
            if not due:
                first_open = (
                    Contact.select(fn.MIN(Contact.next_attempt_at))
                    .where((Contact.queue == row.id) & (Contact.status == ContactStatus.PENDING))
                    .scalar()
                )
                if first_open is not None and first_open > now:
                    # Nobody's window is open: wait for the first one to open.
                    _pause(row.id, kind=health.PAUSE_HOURS, reason=windows.OUTSIDE_HOURS_REASON,
                           resume_at=first_open, now=now)
                    return plan
        booking = pacing.book_slots(
            [i.id for i in instances], now=now, until=until, limit=len(due), local_day=local_day,
            **({"rng": rng} if rng else {}),
        )
        booked = [(contact_id, instance_id, slot) for contact_id, (slot, instance_id) in zip(due, booking.slots)]
        remaining = due[len(booked):]
        if booked:
            Contact.update(
                status=ContactStatus.QUEUED,
                slot_at=Case(Contact.id, [(c, s) for c, _, s in booked]),
                instance=Case(Contact.id, [(c, i) for c, i, _ in booked]),
                updated_at=now,
            ).where(Contact.id.in_([c for c, _, _ in booked]) & (Contact.status == ContactStatus.PENDING)).execute()
            plan.sends = [(c, s) for c, _, s in booked]

    more_waiting = bool(remaining) or len(due) == batch_size
    if remaining and not booked and booking.capped_until:
        last_booked = (
            Contact.select(fn.MAX(Contact.slot_at))
            .where((Contact.queue == row.id) & Contact.status.in_((ContactStatus.QUEUED, ContactStatus.SENDING)))
            .scalar()
        )
        if last_booked is None:
            # Every instance (or the tenant) reached its daily cap and every
            # booked send went out: wait for midnight.
            _pause(row.id, kind=health.PAUSE_DAILY_CAP, reason=DAILY_CAP_REASON, resume_at=booking.capped_until, now=now)
            return plan
        # Pausing now would give back sends already booked (and counted) under
        # the cap: let them go out first, and look again just after the last.
        plan.next_dispatch_in = max(1.0, (last_booked - now).total_seconds() + 1.0)
        return _continue_chain(row, plan, now=now)
    if more_waiting and booked:
        last_slot = max(s for _, _, s in booked)
        plan.next_dispatch_in = max(0.0, (last_slot - DISPATCH_LEAD - now).total_seconds())
    elif more_waiting:
        # Every instance is booked beyond the horizon (other queues share it),
        # or the window is about to close: look again soon.
        plan.next_dispatch_in = min(horizon.total_seconds() / 2, max(0.0, (until - now).total_seconds()) + 1)
    elif not booked:
        plan.callbacks = complete_if_done(row.id)
    return _continue_chain(row, plan, now=now)


def _continue_chain(queue: Queue, plan: DispatchPlan, *, now: datetime) -> DispatchPlan:
    """Record when the chain runs next. Of two dispatches running at once only
    one continues the chain (the other's conditional update finds it taken)."""
    next_at = None if plan.next_dispatch_in is None else now + timedelta(seconds=plan.next_dispatch_in)
    claimed = Queue.update(next_dispatch_at=next_at).where(
        (Queue.id == queue.id)
        & (Queue.next_dispatch_at.is_null() | (Queue.next_dispatch_at <= now + CHAIN_TOLERANCE))
    ).execute()
    if not claimed:
        plan.next_dispatch_in = None
    return plan


def _recipients_open_now(tenant: Tenant, due: list[int], *, now: datetime, until: datetime):
    """With business hours read in each recipient's zone: keep the contacts
    whose window is open now, defer the others to their next opening.

    Returns:
      (contacts to book, the booking limit so every booked slot is inside its
      recipient's window, the next openings of the deferred contacts)
    """
    if not due:
        return [], until, []
    base = windows.calendar_for(tenant)
    keep, opens = [], []
    for contact_id, phone in Contact.select(Contact.id, Contact.phone).where(Contact.id.in_(due)).order_by(Contact.position).tuples():
        calendar = calendar_for_recipient(base, phone)
        if calendar.is_open(now):
            keep.append(contact_id)
            until = min(until, calendar.current_window_end(now) - timedelta(microseconds=1))
            continue
        next_open = calendar.next_open(now)
        Contact.update(next_attempt_at=next_open, updated_at=now).where(Contact.id == contact_id).execute()
        if next_open is not None:
            opens.append(next_open)
    return keep, until, opens


class Outcome(enum.Enum):
    SKIPPED = "skipped"  # not ours to send (already claimed, queue paused or cancelled)
    SENT = "sent"
    RETRY = "retry"  # transient failure; the broker tries again after a backoff
    LATER = "later"  # booked again for a later slot; re-enqueue with `delay`
    DEFERRED = "deferred"  # given back to the database (retry later, or instance down)
    FAILED = "failed"


@dataclass
class SendReport:
    outcome: Outcome
    contact_id: int
    queue_id: str = ""
    reason: str = ""
    delay: float = 0.0
    #: Callback deliveries to hand to the broker (their rows are committed).
    callbacks: list[str] = field(default_factory=list)


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
    # A contact re-queued by a send in flight when its queue was cancelled ends now.
    cancelled = Queue.select(Queue.id).where(Queue.status == QueueStatus.CANCELLED)
    Contact.update(status=ContactStatus.CANCELLED, reason="cancelled by caller", finished_at=now, updated_at=now).where(
        (Contact.id == contact_id) & (Contact.status == ContactStatus.QUEUED) & Contact.queue.in_(cancelled)
    ).execute()
    return False


def _load(contact_id: int) -> Contact:
    return (
        Contact.select(Contact, Instance, Tenant, Campaign.type)
        .join(Instance, on=(Contact.instance == Instance.id))
        .switch(Contact)
        .join(Tenant, on=(Contact.tenant == Tenant.id))
        .switch(Contact)
        .join(Campaign, on=(Contact.campaign == Campaign.id))
        .where(Contact.id == contact_id)
        .get()
    )


def _give_back(contact: Contact, *, now: datetime, at: datetime | None = None) -> None:
    """sending -> pending, not counting this attempt; due again at ``at``."""
    Contact.update(
        status=ContactStatus.PENDING, attempts=Contact.attempts - 1, slot_at=None, next_attempt_at=at, updated_at=now
    ).where((Contact.id == contact.id) & (Contact.status == ContactStatus.SENDING)).execute()


def _rebook_retry(contact: Contact, *, now: datetime) -> SendReport | None:
    """A retried send books a new slot of its instance's pace, so a burst of
    retries after an outage cannot outrun it, and respects business hours.
    Returns None when it may go now."""
    queue_id = str(contact.queue_id)
    if contact.slot_at is not None:
        return None  # this delivery is for the slot booked for the retry
    if not windows.window_for(contact.tenant, contact.campaign.type, now=now).open:
        _give_back(contact, now=now)  # dispatch pauses the queue until the window opens
        return SendReport(Outcome.DEFERRED, contact.id, queue_id, windows.OUTSIDE_HOURS_REASON)
    with write_transaction():
        booking = pacing.book_slots(
            [contact.instance_id], now=now, until=now + MAX_BROKER_DELAY, limit=1,
            local_day=windows.local_day(contact.tenant.timezone),
        )
        if not booking.slots:
            # Capped for today, or the pace is booked far ahead: wait in the database.
            _give_back(contact, now=now, at=booking.capped_until or now + MAX_BROKER_DELAY)
            return SendReport(Outcome.DEFERRED, contact.id, queue_id, "no send slot soon")
        slot, _ = booking.slots[0]
        if slot - now <= SLOT_TOLERANCE:
            return None
        Contact.update(status=ContactStatus.QUEUED, attempts=Contact.attempts - 1, slot_at=slot, updated_at=now).where(
            (Contact.id == contact.id) & (Contact.status == ContactStatus.SENDING)
        ).execute()
    return SendReport(Outcome.LATER, contact.id, queue_id, delay=(slot - now).total_seconds())


def send_one(contact_id: int, *, now: datetime | None = None) -> SendReport:
    """Claim, send and record one contact.

    Returns:
      A report whose ``outcome`` tells the caller (the actor) what to do next.
    """
    now = now or utcnow()
    if not claim(contact_id, now=now):
        return SendReport(Outcome.SKIPPED, contact_id)
    contact = _load(contact_id)
    queue_id = str(contact.queue_id)
    if contact.attempts > 1:
        later = _rebook_retry(contact, now=now)
        if later is not None:
            return later
    gateway = gateway_for(contact.instance)
    try:
        chat_id = contact.chat_id or numbers.resolve_chat_id(contact.tenant_id, contact.phone, gateway, now=now)
        if chat_id is None:
            return _record_failure(contact, GatewayError(numbers.NOT_ON_WHATSAPP, transient=False), queue_id=queue_id)
        admitted_at = _pass_floor(contact)
        if admitted_at is None:
            return _requeue(contact, delay=MAX_FLOOR_SLEEP.total_seconds(), now=now)
        result = gateway.send_text(phone=contact.phone, chat_id=chat_id, text=contact.message, contact_id=contact.id)
    except GatewayError as exc:
        return _record_failure(contact, exc, queue_id=queue_id)

    done_at = utcnow()
    with write_transaction():
        Contact.update(
            status=ContactStatus.SENT,
            provider_message_id=result.provider_message_id,
            chat_id=result.chat_id or chat_id,
            reason="",
            sent_at=admitted_at,
            updated_at=done_at,
        ).where((Contact.id == contact.id) & (Contact.status == ContactStatus.SENDING)).execute()
        Event.create(
            contact=contact.id,
            kind="sent",
            detail={"provider_message_id": result.provider_message_id, "instance": contact.instance.name},
            created_at=done_at,
        )
        delivery = callbacks.emit_for_contact(contact.id, "sent", now=done_at)
    report = SendReport(Outcome.SENT, contact.id, queue_id)
    report.callbacks = [d for d in [delivery] if d] + complete_if_done(contact.queue_id)
    return report


def _pass_floor(contact: Contact) -> datetime | None:
    """Wait (briefly) until the instance's floor admits this send; returns the
    moment it was admitted, or None when it would wait long.

    Threads waiting on one instance sleep a random extra bit, so they do not
    all wake at the same moment and all but one give up.
    """
    min_interval = pacing.Pace.of(contact.instance).min_interval
    deadline = time.monotonic() + MAX_FLOOR_SLEEP.total_seconds()
    for _ in range(MAX_FLOOR_TRIES):
        now = utcnow()
        wait = pacing.admit(contact.instance_id, min_interval=min_interval, now=now)
        if wait == 0:
            return now
        pause = wait + random.uniform(0, FLOOR_JITTER_SECONDS)
        if time.monotonic() + pause > deadline:
            return None
        time.sleep(pause)
    return None


def _requeue(contact: Contact, *, delay: float, now: datetime) -> SendReport:
    """sending -> queued again, not counting this attempt; the actor re-enqueues it."""
    Contact.update(status=ContactStatus.QUEUED, attempts=Contact.attempts - 1, updated_at=now).where(
        (Contact.id == contact.id) & (Contact.status == ContactStatus.SENDING)
    ).execute()
    return SendReport(Outcome.LATER, contact.id, str(contact.queue_id), delay=delay)


def _record_failure(contact: Contact, error: GatewayError, *, queue_id: str) -> SendReport:
    now = utcnow()
    if error.instance_down:
        # Not the contact's fault: give it back without using up an attempt;
        # dispatch books it again on a healthy instance.
        with write_transaction():
            _give_back(contact, now=now)
            Event.create(contact=contact.id, kind="send_error", detail={"reason": error.reason, "instance_down": True},
                         created_at=now)
        health.record_state(contact.instance_id, health.DOWN, now=now)
        return SendReport(Outcome.DEFERRED, contact.id, queue_id, error.reason)

    final = not error.transient or contact.attempts >= contact.tenant.max_attempts
    quick = contact.attempts <= QUICK_RETRIES
    with write_transaction():
        if final:
            update = dict(status=ContactStatus.FAILED, finished_at=now)
        elif quick:
            # Back to queued so the retried message can claim it again; no
            # slot yet: the retry books its own (see _rebook_retry).
            update = dict(status=ContactStatus.QUEUED, slot_at=None)
        else:
            delay = DATABASE_RETRY_DELAYS[min(contact.attempts - QUICK_RETRIES, len(DATABASE_RETRY_DELAYS)) - 1]
            update = dict(status=ContactStatus.PENDING, slot_at=None, next_attempt_at=now + delay)
        Contact.update(reason=error.reason, updated_at=now, **update).where(
            (Contact.id == contact.id) & (Contact.status == ContactStatus.SENDING)
        ).execute()
        Event.create(
            contact=contact.id,
            kind="failed" if final else "send_error",
            detail={"reason": error.reason, "attempt": contact.attempts, "transient": error.transient},
            created_at=now,
        )
        delivery = callbacks.emit_for_contact(contact.id, "failed", now=now) if final else None
    if final:
        report = SendReport(Outcome.FAILED, contact.id, queue_id, error.reason)
        report.callbacks = [d for d in [delivery] if d] + complete_if_done(contact.queue_id)
        return report
    if quick:
        return SendReport(Outcome.RETRY, contact.id, queue_id, error.reason)
    return SendReport(Outcome.DEFERRED, contact.id, queue_id, error.reason)
