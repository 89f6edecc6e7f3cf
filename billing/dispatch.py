"""Dispatching a queue: booking send slots for its next due contacts.

``plan_dispatch`` moves the queue's next due contacts pending -> queued, each
with a slot of an instance's pace (the daily caps are reserved as the slots
are booked, see billing.pacing), and says which ``send_contact`` messages to
publish and when dispatch runs again. The queue waits instead, paused with a
reason, when its business hours are closed, when its tenant has no healthy
instance, or when the daily caps are spent and every booked send went out.

Waits longer than a broker should hold a message (the next business-hours
window, a daily cap) are written to the database (``queue.resume_at``,
``contact.next_attempt_at``) for the scheduler. Sending a booked contact is
billing.sending's.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from peewee import Case, fn

from billing import health, pacing, transitions, windows
from billing.adapters.db import locked, write_transaction
from billing.adapters.models import Campaign, Contact, Instance, Queue, Tenant
from billing.clock import utcnow
from billing.domain.hours import calendar_for_recipient
from billing.domain.states import ContactStatus, QueueStatus
from billing.instances import healthy_instances
from billing.queues import complete_if_done

log = structlog.get_logger(__name__)

#: Dispatch wakes up this long before its last booked slot is used, so the next
#: batch is booked before the instance would go idle.
DISPATCH_LEAD = timedelta(seconds=2)

#: A dispatch arriving this close to its chain's scheduled time is that chain.
CHAIN_TOLERANCE = timedelta(seconds=1)

#: pause_reason when a daily cap stopped the queue.
DAILY_CAP_REASON = "Limite diário de envios atingido"

#: pause_reason when the tenant has no hours at all in which to send.
NO_HOURS_REASON = "Nenhum horário comercial configurado"

#: The instant before a window's end: a slot at the end itself is outside it.
JUST_BEFORE = timedelta(microseconds=1)


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


@dataclass(frozen=True)
class _Target:
    """The queue a dispatch pass advances, with what its booking depends on.

    Parameters:
      queue_id: the queue.
      tenant: its tenant (hours, zone, caps).
      template_type: its campaign's type (which hours apply).
      per_recipient: business hours are read in each recipient's zone.
    """

    queue_id: object
    tenant: Tenant
    template_type: str
    per_recipient: bool


@dataclass
class _Batch:
    """The contacts one pass found due and the slots it booked for them.

    Parameters:
      due: the due contacts, in queue order.
      booked: (contact id, instance id, slot) of each booking, a prefix of ``due``.
      capped_until: set when the daily caps stopped the booking (see pacing.Booking).
      until: the latest slot the pass could book.
    """

    due: list[int]
    booked: list[tuple[int, int, datetime]]
    capped_until: datetime | None
    until: datetime

    @property
    def remaining(self) -> list[int]:
        """Due contacts left without a slot."""
        return self.due[len(self.booked):]


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
    target = _target(queue_id, now=now)
    if target is None:
        return DispatchPlan()
    window = _open_window(target, now=now)
    if window is None:
        return DispatchPlan()
    instances = _instances_or_wait(target, now=now)
    if not instances:
        return DispatchPlan()
    until = _booking_limit(window, now=now, horizon=horizon)
    batch = _book_due(target, instances, now=now, until=until, batch_size=batch_size, rng=rng)
    if batch is None:
        return DispatchPlan()
    return _plan_after(target, batch, now=now, horizon=horizon, batch_size=batch_size)


def _target(queue_id, *, now: datetime) -> _Target | None:
    """The queue to advance, or None when this pass has nothing to do: the
    queue is gone or stopped, or its dispatch chain runs again later."""
    row = (
        Queue.select(Queue, Campaign.type, Tenant)
        .join(Campaign, on=(Queue.campaign == Campaign.id))
        .switch(Queue)
        .join(Tenant, on=(Queue.tenant == Tenant.id))
        .where(Queue.id == queue_id)
        .first()
    )
    if row is None or row.status not in QueueStatus.RUNNING:
        return None
    if row.next_dispatch_at is not None and row.next_dispatch_at > now + CHAIN_TOLERANCE:
        # This queue's chain runs again soon: an extra trigger (recovery, a
        # given-back contact, a redelivery) must not start a second chain.
        return None
    tenant, template_type = row.tenant, row.campaign.type
    per_recipient = bool(tenant.recipient_timezone) and windows.hours_bound(template_type)
    return _Target(queue_id=row.id, tenant=tenant, template_type=template_type, per_recipient=per_recipient)


def _open_window(target: _Target, *, now: datetime) -> windows.Window | None:
    """The tenant's sending window open now (always open when each recipient's
    hours are checked instead); None after pausing the queue until it opens."""
    if target.per_recipient:
        return windows.ALWAYS
    window = windows.window_for(target.tenant, target.template_type, now=now)
    if window.open:
        return window
    reason = windows.OUTSIDE_HOURS_REASON if window.next_open else NO_HOURS_REASON
    _pause_automatic(target.queue_id, kind=health.PAUSE_HOURS, reason=reason, resume_at=window.next_open, now=now)
    log.info("queue waits for business hours", queue_id=str(target.queue_id), resume_at=str(window.next_open))
    return None


def _instances_or_wait(target: _Target, *, now: datetime) -> list[Instance]:
    """The tenant's healthy instances, fastest first; none after turning the
    queue ``instance_down`` (it resumes when an instance comes back)."""
    instances = list(healthy_instances(tenant_id=target.tenant.id))
    if not instances:
        health.pause_for_instances(where=Queue.id == target.queue_id, now=now)
        log.warning("queue waits for an instance", queue_id=str(target.queue_id))
    return instances


def _booking_limit(window: windows.Window, *, now: datetime, horizon: timedelta) -> datetime:
    """The latest slot this pass may book: within the horizon and inside the window."""
    until = now + horizon
    if window.until is not None and window.until <= until:
        until = window.until - JUST_BEFORE
    return until


def _book_due(target: _Target, instances: list[Instance], *, now: datetime, until: datetime, batch_size: int,
              rng: random.Random | None) -> _Batch | None:
    """Book slots for the queue's due contacts (pending -> queued), in one
    transaction that holds the queue's row lock; None when the queue stopped
    meanwhile or waits for a recipient's hours."""
    with write_transaction():
        if not _start(target.queue_id, now=now):
            return None
        due = _due_contacts(target.queue_id, now=now, batch_size=batch_size)
        if target.per_recipient:
            due, until = _recipients_open_now(target.tenant, due, now=now, until=until)
            if not due and _wait_for_first_recipient(target.queue_id, now=now):
                return None
        booking = pacing.book_slots(
            [i.id for i in instances], now=now, until=until, limit=len(due),
            local_day=windows.local_day(target.tenant.timezone), **({"rng": rng} if rng else {}),
        )
        booked = [(contact_id, instance_id, slot) for contact_id, (slot, instance_id) in zip(due, booking.slots)]
        _book(booked, now=now)
    return _Batch(due=due, booked=booked, capped_until=booking.capped_until, until=until)


def _start(queue_id, *, now: datetime) -> bool:
    """Lock the queue's row (FOR NO KEY UPDATE) for the rest of the pass and
    mark a new queue processing; False when it is no longer running.

    The row stays locked while its contacts are booked: a pause, resume or
    cancel waits for this pass and then sees every booking.
    """
    status = locked(Queue.select(Queue.status).where(Queue.id == queue_id)).scalar()
    if status not in QueueStatus.RUNNING:
        return False
    transitions.move_queues(transitions.START, Queue.id == queue_id, now=now)
    return True


def _due_contacts(queue_id, *, now: datetime, batch_size: int) -> list[int]:
    """The next ``batch_size`` pending contacts due now, in queue order,
    locked; rows another pass holds are skipped, not waited for."""
    query = (
        Contact.select(Contact.id)
        .where(
            (Contact.queue == queue_id)
            & (Contact.status == ContactStatus.PENDING)
            & ((Contact.next_attempt_at.is_null()) | (Contact.next_attempt_at <= now))
        )
        .order_by(Contact.position)
        .limit(batch_size)
    )
    return [contact_id for (contact_id,) in locked(query, skip_locked=True).tuples()]


def _recipients_open_now(tenant: Tenant, due: list[int], *, now: datetime, until: datetime) -> tuple[list[int], datetime]:
    """With business hours read in each recipient's zone: keep the contacts
    whose window is open now, defer the others to their next opening.

    Returns:
      (contacts to book, the booking limit so every booked slot is inside its
      recipient's window)
    """
    if not due:
        return [], until
    base = windows.calendar_for(tenant)
    keep = []
    rows = Contact.select(Contact.id, Contact.phone).where(Contact.id.in_(due)).order_by(Contact.position).tuples()
    for contact_id, phone in rows:
        calendar = calendar_for_recipient(base, phone)
        if calendar.is_open(now):
            keep.append(contact_id)
            until = min(until, calendar.current_window_end(now) - JUST_BEFORE)
            continue
        Contact.update(next_attempt_at=calendar.next_open(now), updated_at=now).where(Contact.id == contact_id).execute()
    return keep, until


def _wait_for_first_recipient(queue_id, *, now: datetime) -> bool:
    """Nobody's window is open: pause the queue until the first one opens.
    False when a pending contact is due now (or none has an opening)."""
    first_open = (
        Contact.select(fn.MIN(Contact.next_attempt_at))
        .where((Contact.queue == queue_id) & (Contact.status == ContactStatus.PENDING))
        .scalar()
    )
    if first_open is None or first_open <= now:
        return False
    _pause_automatic(queue_id, kind=health.PAUSE_HOURS, reason=windows.OUTSIDE_HOURS_REASON, resume_at=first_open,
                     now=now)
    return True


def _book(booked: list[tuple[int, int, datetime]], *, now: datetime) -> None:
    """pending -> queued for the booked contacts, each with its slot and instance."""
    if not booked:
        return
    transitions.move_contacts(
        transitions.BOOK, Contact.id.in_([c for c, _, _ in booked]), now=now,
        slot_at=Case(Contact.id, [(c, s) for c, _, s in booked]),
        instance=Case(Contact.id, [(c, i) for c, i, _ in booked]),
        enqueued_at=None,
    )


def _plan_after(target: _Target, batch: _Batch, *, now: datetime, horizon: timedelta, batch_size: int) -> DispatchPlan:
    """The plan for a batch: its sends, and when dispatch looks again (or
    the queue's completion when nothing is left)."""
    plan = DispatchPlan(sends=[(c, s) for c, _, s in batch.booked])
    if batch.remaining and not batch.booked and batch.capped_until:
        return _wait_for_caps(target, plan, capped_until=batch.capped_until, now=now)
    plan.next_dispatch_in = _next_dispatch_in(batch, now=now, horizon=horizon, batch_size=batch_size)
    if plan.next_dispatch_in is None and not batch.booked:
        plan.callbacks = complete_if_done(target.queue_id)
    return _continue_chain(target.queue_id, plan, now=now)


def _next_dispatch_in(batch: _Batch, *, now: datetime, horizon: timedelta, batch_size: int) -> float | None:
    """Seconds until the next pass, or None when every due contact is booked."""
    if not batch.remaining and len(batch.due) < batch_size:
        return None
    if batch.booked:
        last_slot = max(s for _, _, s in batch.booked)
        return max(0.0, (last_slot - DISPATCH_LEAD - now).total_seconds())
    # Every instance is booked beyond the horizon (other queues share it),
    # or the window is about to close: look again soon.
    return min(horizon.total_seconds() / 2, max(0.0, (batch.until - now).total_seconds()) + 1)


def _wait_for_caps(target: _Target, plan: DispatchPlan, *, capped_until: datetime, now: datetime) -> DispatchPlan:
    """The daily caps stopped the booking: pause the queue until they reset
    once every booked send went out, else look again just after the last."""
    last_booked = (
        Contact.select(fn.MAX(Contact.slot_at))
        .where((Contact.queue == target.queue_id) & Contact.status.in_((ContactStatus.QUEUED, ContactStatus.SENDING)))
        .scalar()
    )
    if last_booked is None:
        # Every instance (or the tenant) reached its daily cap and every
        # booked send went out: wait for midnight.
        _pause_automatic(target.queue_id, kind=health.PAUSE_DAILY_CAP, reason=DAILY_CAP_REASON,
                         resume_at=capped_until, now=now)
        return plan
    # Pausing now would give back sends already booked (and counted) under
    # the cap: let them go out first, and look again just after the last.
    plan.next_dispatch_in = max(1.0, (last_booked - now).total_seconds() + 1.0)
    return _continue_chain(target.queue_id, plan, now=now)


def _continue_chain(queue_id, plan: DispatchPlan, *, now: datetime) -> DispatchPlan:
    """Record when the chain runs next. Of two dispatches running at once only
    one continues the chain (the other's conditional update finds it taken)."""
    next_at = None if plan.next_dispatch_in is None else now + timedelta(seconds=plan.next_dispatch_in)
    claimed = Queue.update(next_dispatch_at=next_at).where(
        (Queue.id == queue_id)
        & (Queue.next_dispatch_at.is_null() | (Queue.next_dispatch_at <= now + CHAIN_TOLERANCE))
    ).execute()
    if not claimed:
        plan.next_dispatch_in = None
    return plan


def _pause_automatic(queue_id, *, kind: str, reason: str, resume_at: datetime | None, now: datetime) -> None:
    """Pause the queue until ``resume_at`` (hours closed, caps spent): the
    scheduler lifts it then (billing.recovery.resume_due_pauses)."""
    transitions.move_queues(transitions.PAUSE_AUTOMATIC, Queue.id == queue_id, now=now, pause_kind=kind,
                            pause_reason=reason, resume_at=resume_at)


def mark_enqueued(contact_ids: list[int], *, now: datetime | None = None) -> int:
    """Record that the broker has the messages of these bookings (dispatch
    calls it after publishing). A booking left unmarked belongs to a dispatch
    that died between its commit and its publish: recovery gives it back at
    once instead of waiting for its slot to age.

    Parameters:
      contact_ids: the contacts whose send_contact messages were published.
      now: the time of the publish (tests).

    Returns:
      How many bookings were marked.
    """
    if not contact_ids:
        return 0
    now = now or utcnow()
    return Contact.update(enqueued_at=now).where(
        Contact.id.in_(contact_ids) & (Contact.status == ContactStatus.QUEUED) & Contact.enqueued_at.is_null()
    ).execute()
