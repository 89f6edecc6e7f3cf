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

from billing import health, numbers, pacing, transitions, windows, workers
from billing.clock import utcnow
from billing.adapters.db import database, locked, write_transaction
from billing.domain.hours import calendar_for_recipient
from billing.adapters.models import Campaign, Contact, Event, Instance, Queue, Tenant
from billing.adapters.providers import GatewayError, gateway_for
from billing.adapters.providers.base import SendResult
from billing.queues import complete_if_done
from billing.domain.states import ContactStatus, QueueStatus
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


def _pause(queue_id, *, kind: str, reason: str, resume_at: datetime | None, now: datetime) -> None:
    transition = transitions.INSTANCE_DOWN if kind == health.PAUSE_INSTANCE else transitions.PAUSE_AUTOMATIC
    transitions.move_queues(transition, Queue.id == queue_id, now=now, pause_kind=kind, pause_reason=reason,
                            resume_at=resume_at)


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
        _pause(row.id, kind=health.PAUSE_INSTANCE, reason=health.INSTANCE_DOWN_REASON, resume_at=None, now=now)
        log.warning("queue waits for an instance", queue_id=str(row.id))
        return DispatchPlan()

    until = now + horizon
    if window.until is not None and window.until <= until:
        until = window.until - timedelta(microseconds=1)  # a slot at the window's end is outside it
    local_day = windows.local_day(tenant.timezone)
    plan = DispatchPlan()
    with write_transaction():
        # The queue row is locked while its contacts are booked: a pause,
        # resume or cancel waits for this pass and then sees every booking.
        status = locked(Queue.select(Queue.status).where(Queue.id == row.id)).scalar()
        if status not in QueueStatus.RUNNING:
            return plan
        transitions.move_queues(transitions.START, Queue.id == row.id, now=now)
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
            transitions.move_contacts(
                transitions.BOOK, Contact.id.in_([c for c, _, _ in booked]), now=now,
                slot_at=Case(Contact.id, [(c, s) for c, _, s in booked]),
                instance=Case(Contact.id, [(c, i) for c, i, _ in booked]),
                enqueued_at=None,
            )
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
    """What one send did, for the actor.

    Parameters:
      outcome: what the actor does next (see :class:`Outcome`).
      contact_id, queue_id: whose send it was.
      reason: why it did not go (for the log).
      delay: seconds until the re-enqueued message (LATER).
      slot: the slot a LATER message is for (its booking token).
      callbacks: callback deliveries to hand to the broker (their rows are committed).
    """

    outcome: Outcome
    contact_id: int
    queue_id: str = ""
    reason: str = ""
    delay: float = 0.0
    slot: datetime | None = None
    callbacks: list[str] = field(default_factory=list)


#: A send the gateway accepted is recorded even across a database outage of
#: this long: the record is retried, never the send (a second send would reach
#: the customer twice, and acks would match only the second message).
RECORD_DEADLINE = timedelta(minutes=10)

#: Waits between two tries of a record while the database is away (seconds;
#: the last repeats), short so the record lands soon after it returns.
RECORD_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0)

#: The reason of a contact whose last attempt went unanswered and which the
#: gateway did not show as sent, with no attempt left.
UNANSWERED_REASON = "the gateway did not answer and did not show the message as sent"

#: Event kinds of the ambiguous-send checks.
EVENT_UNCONFIRMED = "send_unconfirmed"
EVENT_CONFIRMED = "send_confirmed"
EVENT_RESEND_CHECKED = "resend_after_check"


def claim(contact_id: int, *, now: datetime, slot: datetime | None = None, worker: str = "") -> bool:
    """queued -> sending for a contact whose queue is running; True if ours.

    Parameters:
      contact_id: the contact.
      now: the time of the claim.
      slot: the booked slot the broker message was published for; a message
        for an older booking (the contact was given back and booked again
        since) claims nothing. None: any booking (messages without a token).
      worker: the claiming process (billing.workers), so its death releases
        the claim at once.
    """
    running = Queue.select(Queue.id).where(Queue.status.in_(QueueStatus.RUNNING))
    mine = (Contact.id == contact_id) & Contact.queue.in_(running)
    if slot is not None:
        # A retry's redelivery has no slot of its own (RETRY_SOON forgot it).
        mine &= (Contact.slot_at == slot) | Contact.slot_at.is_null()
    if transitions.move_contacts(transitions.CLAIM, mine, now=now, claimed_at=now, claimed_by=worker):
        return True
    return _settle_unclaimable(contact_id, now=now, slot=slot, worker=worker)


def _settle_unclaimable(contact_id: int, *, now: datetime, slot: datetime | None, worker: str) -> bool:
    """A queued contact this message could not claim: its queue stopped. Give
    it back (paused) or end it (cancelled), under the queue's row lock so a
    resume cannot slip in between and leave it queued with no message."""
    if _booked_queue(contact_id, slot=slot) is None:
        # Most messages that claim nothing are redeliveries and stale copies:
        # answer them with one read, without a write transaction (on SQLite
        # the database's single write lock).
        return False
    with write_transaction():
        queue_id = _booked_queue(contact_id, slot=slot)
        if queue_id is None:
            return False
        status = locked(Queue.select(Queue.status).where(Queue.id == queue_id)).scalar()
        this = Contact.id == contact_id
        if status in QueueStatus.RUNNING:  # resumed just now: the message is still ours
            return bool(transitions.move_contacts(transitions.CLAIM, this, now=now, claimed_at=now, claimed_by=worker))
        if status == QueueStatus.CANCELLED:
            transitions.move_contacts(transitions.CANCEL, this, now=now, reason=transitions.CANCELLED_REASON)
        elif status in (QueueStatus.PAUSED, QueueStatus.INSTANCE_DOWN):
            transitions.move_contacts(transitions.UNBOOK, this, now=now)
    return False


def _booked_queue(contact_id: int, *, slot: datetime | None):
    """The queue of the contact while it is queued for this message's
    booking, else None."""
    row = Contact.select(Contact.queue, Contact.status, Contact.slot_at).where(Contact.id == contact_id).first()
    if row is None or row.status != ContactStatus.QUEUED:
        return None
    if slot is not None and row.slot_at is not None and row.slot_at != slot:
        return None  # a stale message: the contact's live booking has its own
    return row.queue_id


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


def _mine(contact: Contact):
    """The contact, while this claim still holds it."""
    return (Contact.id == contact.id) & (Contact.claimed_by == contact.claimed_by)


def _give_back(contact: Contact, *, now: datetime, at: datetime | None = None) -> None:
    """sending -> pending, not counting this attempt; due again at ``at``."""
    transitions.move_contacts(transitions.GIVE_BACK, _mine(contact), now=now, next_attempt_at=at)


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
            Contact.update(slot_at=slot).where(Contact.id == contact.id).execute()
            return None
        transitions.move_contacts(transitions.REBOOK, _mine(contact), now=now, slot_at=slot, enqueued_at=now)
    return SendReport(Outcome.LATER, contact.id, queue_id, delay=(slot - now).total_seconds(), slot=slot)


def send_one(contact_id: int, *, now: datetime | None = None, slot: datetime | None = None) -> SendReport:
    """Claim, send and record one contact.

    Parameters:
      contact_id: the contact.
      now: the current time (tests).
      slot: the booking the broker message was published for (see :func:`claim`).

    Returns:
      A report whose ``outcome`` tells the caller (the actor) what to do next.
    """
    now = now or utcnow()
    if not claim(contact_id, now=now, slot=slot, worker=workers.current_id()):
        return SendReport(Outcome.SKIPPED, contact_id)
    progress = {"gateway_called": False}
    try:
        return _send_claimed(contact_id, now=now, progress=progress)
    except BaseException:
        # Whatever broke (the database went away, a bug), a claim this
        # message holds must not outlive it: its retry would find the contact
        # "sending" and skip it. A message the gateway may have taken keeps
        # its claim (the record is what failed; resending would duplicate it).
        if not progress["gateway_called"] and not _release_claim(contact_id):
            workers.release_claim_later(contact_id)  # at the next beat, once the database answers
        raise


def _release_claim(contact_id: int) -> bool:
    """Give this process's claim of ``contact_id`` back (no attempt spent);
    False when the database cannot be reached now."""
    from peewee import InterfaceError, OperationalError

    try:
        transitions.move_contacts(
            transitions.GIVE_BACK, (Contact.id == contact_id) & (Contact.claimed_by == workers.current_id()),
            now=utcnow())
        return True
    except (OperationalError, InterfaceError):
        _drop_connection()
        return False


def _send_claimed(contact_id: int, *, now: datetime, progress: dict) -> SendReport:
    """The send of a contact this message has claimed."""
    contact = _load(contact_id)
    queue_id = str(contact.queue_id)
    gateway = gateway_for(contact.instance)
    if contact.outcome_unknown:
        confirmed = _confirm_earlier_send(contact, gateway)
        if confirmed is not None:
            return _record_sent(contact, confirmed, chat_id=contact.chat_id, admitted_at=None, confirmed=True)
        if contact.attempts > contact.tenant.max_attempts:  # checked, not there, and no attempt left
            return _record_failure(contact, GatewayError(UNANSWERED_REASON, transient=False), queue_id=queue_id)
    if contact.attempts > 1:
        later = _rebook_retry(contact, now=now)
        if later is not None:
            return later
    try:
        chat_id = contact.chat_id or numbers.resolve_chat_id(contact.tenant_id, contact.phone, gateway, now=now)
        if chat_id is None:
            return _record_failure(contact, GatewayError(numbers.NOT_ON_WHATSAPP, transient=False), queue_id=queue_id)
        admitted_at = _pass_floor(contact)
        if admitted_at is None:
            return _requeue(contact, delay=MAX_FLOOR_SLEEP.total_seconds(), now=now)
        progress["gateway_called"] = True
        result = _call_gateway(gateway, contact, chat_id=chat_id)
    except GatewayError as exc:
        return _record_failure(contact, exc, queue_id=queue_id)
    return _record_sent(contact, result, chat_id=chat_id, admitted_at=admitted_at)


def _call_gateway(gateway, contact: Contact, *, chat_id: str) -> SendResult:
    """The send itself. An error the adapter did not classify happened with
    the request possibly out: treat it as ambiguous (checked before a resend)."""
    try:
        return gateway.send_text(phone=contact.phone, chat_id=chat_id, text=contact.message, contact_id=contact.id)
    except GatewayError:
        raise
    except Exception as exc:
        log.exception("unexpected gateway error", contact_id=contact.id)
        raise GatewayError(f"unexpected error: {type(exc).__name__}", transient=True, ambiguous=True) from exc


def _confirm_earlier_send(contact: Contact, gateway) -> SendResult | None:
    """The previous attempt went out but its answer never came: ask the
    gateway whether the message arrived before sending it again.

    Returns:
      The earlier message when the gateway shows it, else None (send again;
      what was decided is written to the contact's history).
    """
    since = (
        Event.select(fn.MAX(Event.created_at))
        .where((Event.contact == contact.id) & (Event.kind == EVENT_UNCONFIRMED))
        .scalar()
    ) or contact.created_at
    # The request left before the failure was recorded: look a little earlier.
    since -= timedelta(seconds=AMBIGUOUS_LOOKBACK_SECONDS)
    find_sent = getattr(gateway, "find_sent", None)
    decision, found = "not_found", None
    try:
        if find_sent is None:
            raise LookupError("this gateway cannot list sent messages")
        # The chat the first attempt went to (its number check is cached).
        chat_id = contact.chat_id or numbers.resolve_chat_id(contact.tenant_id, contact.phone, gateway, now=utcnow())
        if not chat_id:
            raise LookupError("the number has no chat id")
        found = find_sent(chat_id=chat_id, text=contact.message, since=since)
    except Exception as exc:  # the gateway cannot tell: sending again is the lesser evil
        decision = "unchecked"
        log.warning("could not check an unconfirmed send; sending again", contact_id=contact.id, error=str(exc)[:200])
    else:
        if found is not None:
            decision = "found"
    Event.create(contact=contact.id, kind=EVENT_CONFIRMED if found else EVENT_RESEND_CHECKED,
                 detail={"decision": decision, **({"provider_message_id": found.provider_message_id} if found else {})},
                 created_at=utcnow())
    return found


#: How long before the recorded failure of an unanswered send the gateway's
#: history is searched for it (the request's timeout, with room).
AMBIGUOUS_LOOKBACK_SECONDS = 120


def _record_sent(contact: Contact, result: SendResult, *, chat_id: str, admitted_at: datetime | None,
                 confirmed: bool = False) -> SendReport:
    """sending -> sent. The gateway has the message: the record is retried
    across a database outage (see :data:`RECORD_DEADLINE`), never the send."""
    queue_id = str(contact.queue_id)

    def record() -> list[str]:
        done_at = utcnow()
        # A late record wins over a resend: if the claim was released while
        # the database was away, the contact is not sent twice.
        mine = _mine(contact) | ((Contact.id == contact.id) & Contact.status.in_((ContactStatus.PENDING,
                                                                                 ContactStatus.QUEUED)))
        moved = transitions.move_contacts(
            transitions.SEND_ACCEPTED, mine, now=done_at,
            detail={"provider_message_id": result.provider_message_id, "instance": contact.instance.name,
                    **({"confirmed_after_timeout": True} if confirmed else {})},
            provider_message_id=result.provider_message_id, chat_id=result.chat_id or chat_id, reason="",
            sent_at=admitted_at or done_at, outcome_unknown=False,
        )
        return moved.callbacks

    report = SendReport(Outcome.SENT, contact.id, queue_id)
    report.callbacks = _durably(record, what="send result", contact_id=contact.id)
    # After the record's commit, not inside it: the record locks the instance
    # row (sent count), dispatch locks the queue row then the instance's.
    report.callbacks += complete_if_done(contact.queue_id)
    return report


def _durably(work, *, what: str, contact_id: int):
    """Run ``work`` (one transaction) until it commits or RECORD_DEADLINE passes.

    The database may be restarting: each try drops this thread's connection
    (a broken one is discarded by the pool) and waits a little longer.
    """
    from peewee import InterfaceError, OperationalError

    deadline = time.monotonic() + RECORD_DEADLINE.total_seconds()
    tries = 0
    while True:
        try:
            with write_transaction():
                return work()
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() >= deadline:
                raise
            if tries == 0:
                log.warning("database unavailable; retrying the record", what=what, contact_id=contact_id,
                            error=str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__)
            _drop_connection()
            time.sleep(RECORD_BACKOFF_SECONDS[min(tries, len(RECORD_BACKOFF_SECONDS) - 1)])
            tries += 1


def _drop_connection() -> None:
    try:
        if not database.is_closed():
            database.close()
    except Exception:  # a connection the server already dropped may fail to close; it is gone either way
        pass


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
    transitions.move_contacts(transitions.REQUEUE, _mine(contact), now=now, enqueued_at=now)
    return SendReport(Outcome.LATER, contact.id, str(contact.queue_id), delay=delay, slot=contact.slot_at)


def _record_failure(contact: Contact, error: GatewayError, *, queue_id: str) -> SendReport:
    now = utcnow()
    if error.instance_down:
        # Not the contact's fault: give it back without using up an attempt;
        # dispatch books it again on a healthy instance.
        def give_back() -> None:
            _give_back(contact, now=now)
            Event.create(contact=contact.id, kind="send_error", detail={"reason": error.reason, "instance_down": True},
                         created_at=now)

        _durably(give_back, what="give-back", contact_id=contact.id)
        health.record_state(contact.instance_id, health.DOWN, reason=error.reason, now=now)
        return SendReport(Outcome.DEFERRED, contact.id, queue_id, error.reason)

    ambiguous = bool(getattr(error, "ambiguous", False))
    # An unanswered send may have gone out: it is never failed unchecked; the
    # next attempt asks the gateway first (see _confirm_earlier_send).
    final = not ambiguous and (not error.transient or contact.attempts >= contact.tenant.max_attempts)
    quick = ambiguous or contact.attempts <= QUICK_RETRIES
    detail = {"reason": error.reason, "transient": error.transient, **({"ambiguous": True} if ambiguous else {})}

    def record() -> transitions.Moved:
        if ambiguous:
            Event.create(contact=contact.id, kind=EVENT_UNCONFIRMED, detail={"reason": error.reason}, created_at=now)
        if final:
            return transitions.move_contacts(transitions.SEND_FAILED, _mine(contact), now=now, detail=detail,
                                             reason=error.reason, outcome_unknown=ambiguous)
        if quick:
            # Back to queued so the retried message can claim it again; no
            # slot yet: the retry books its own (see _rebook_retry).
            return transitions.move_contacts(transitions.RETRY_SOON, _mine(contact), now=now, detail=detail,
                                             reason=error.reason, outcome_unknown=ambiguous, enqueued_at=now)
        delay = DATABASE_RETRY_DELAYS[min(contact.attempts - QUICK_RETRIES, len(DATABASE_RETRY_DELAYS)) - 1]
        return transitions.move_contacts(transitions.RETRY_LATER, _mine(contact), now=now, detail=detail,
                                         reason=error.reason, outcome_unknown=ambiguous,
                                         next_attempt_at=now + delay)

    moved = _durably(record, what="send failure", contact_id=contact.id)
    if final:
        report = SendReport(Outcome.FAILED, contact.id, queue_id, error.reason)
        report.callbacks = moved.callbacks + complete_if_done(contact.queue_id)
        return report
    if quick:
        return SendReport(Outcome.RETRY, contact.id, queue_id, error.reason)
    return SendReport(Outcome.DEFERRED, contact.id, queue_id, error.reason)


def mark_enqueued(contact_ids: list[int], *, now: datetime | None = None) -> int:
    """Record that the broker has the messages of these bookings (dispatch
    calls it after publishing). A booking left unmarked belongs to a dispatch
    that died between its commit and its publish: recovery gives it back at
    once instead of waiting for its slot to age."""
    if not contact_ids:
        return 0
    now = now or utcnow()
    return Contact.update(enqueued_at=now).where(
        Contact.id.in_(contact_ids) & (Contact.status == ContactStatus.QUEUED) & Contact.enqueued_at.is_null()
    ).execute()
