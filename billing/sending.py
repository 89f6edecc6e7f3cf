"""Sending one booked contact: the rules the send actor runs.

``send_one`` claims a queued contact (queued -> sending) with one conditional
UPDATE, calls the gateway, and records the outcome. A redelivered message finds
the contact no longer ``queued`` and does nothing, so the actor is idempotent.
A send whose answer never came is checked with the gateway before it is sent
again. Booking the slots is billing.dispatch's.

One tenant's sends running in this process are bounded (billing.fairness):
a send over the bound claims nothing and is re-published a little later, so
a tenant whose gateway hangs cannot hold every worker thread.

Waits longer than a broker should hold a message (a daily cap, a retry hours
later) are written to the database (``contact.next_attempt_at``) for the
scheduler.
"""
from __future__ import annotations

import enum
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from peewee import InterfaceError, OperationalError, fn

from billing import fairness, health, numbers, pacing, transitions, windows, workers
from billing.adapters.db import database, locked, write_transaction
from billing.adapters.models import Campaign, Contact, Event, Instance, Queue, Tenant
from billing.adapters.providers import GatewayError, gateway_for
from billing.adapters.providers.base import SendResult
from billing.clock import utcnow
from billing.domain.states import ContactStatus, QueueStatus
from billing.queues import complete_if_done

log = structlog.get_logger(__name__)

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

#: What the database says while it restarts or is unreachable.
DATABASE_DOWN = (OperationalError, InterfaceError)


class Outcome(enum.Enum):
    SKIPPED = "skipped"  # not ours to send (already claimed, queue paused or cancelled)
    SENT = "sent"
    RETRY = "retry"  # transient failure; the broker tries again after a backoff
    LATER = "later"  # booked again for a later slot; re-enqueue with `delay`
    DEFERRED = "deferred"  # given back to the database (retry later, or instance down)
    FAILED = "failed"
    BUSY = "busy"  # the tenant's sends in this process are at their bound; re-enqueue with `delay`, nothing changed


@dataclass
class SendReport:
    """What one send did, for the actor.

    Parameters:
      outcome: what the actor does next (see :class:`Outcome`).
      contact_id, queue_id: whose send it was.
      reason: why it did not go (for the log).
      delay: seconds until the re-enqueued message (LATER).
      slot: the slot a LATER or BUSY message is for (its booking token).
      callbacks: callback deliveries to hand to the broker (their rows are committed).
      refusals: how often the bound refused this message, this time included (BUSY).
    """

    outcome: Outcome
    contact_id: int
    queue_id: str = ""
    reason: str = ""
    delay: float = 0.0
    slot: datetime | None = None
    callbacks: list[str] = field(default_factory=list)
    refusals: int = 0


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


def send_one(contact_id: int, *, now: datetime | None = None, slot: datetime | None = None, refusals: int = 0,
             slots: fairness.TenantSlots | None = None) -> SendReport:
    """Claim, send and record one contact, within its tenant's bound.

    Parameters:
      contact_id: the contact.
      now: the current time (tests).
      slot: the booking the broker message was published for (see :func:`claim`).
      refusals: how often the bound refused this message before (its next delay grows).
      slots: the bound (default: this process's, billing.fairness.sends).

    Returns:
      A report whose ``outcome`` tells the caller (the actor) what to do next.
    """
    slots = slots or fairness.sends
    tenant_id = Contact.select(Contact.tenant).where(Contact.id == contact_id).scalar()
    if tenant_id is None:
        return SendReport(Outcome.SKIPPED, contact_id)
    # Held from the claim to the record: everything that may wait on the
    # tenant's gateway (number check, floor, typing, the send) is inside.
    with slots.held(tenant_id) as admitted:
        if not admitted:
            return _busy(contact_id, slot=slot, refusal=slots.refusal(tenant_id, refusals=refusals))
        return _claim_and_send(contact_id, now=now or utcnow(), slot=slot)


def _busy(contact_id: int, *, slot: datetime | None, refusal: fairness.Refusal) -> SendReport:
    """A send its tenant's bound refused: nothing is claimed or written (the
    booking and its token stay as they are); the message comes back later.
    A message that would claim nothing anyway (stale, or a redelivery) ends here."""
    queue_id = _booked_queue(contact_id, slot=slot)
    if queue_id is None:
        return SendReport(Outcome.SKIPPED, contact_id)
    return SendReport(Outcome.BUSY, contact_id, str(queue_id), "the tenant's sends are at their bound",
                      delay=refusal.delay, slot=slot, refusals=refusal.refusals)


def _claim_and_send(contact_id: int, *, now: datetime, slot: datetime | None) -> SendReport:
    """The claim, and the send of a claimed contact."""
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
            # At the next beat, once the database answers.
            workers.release_claim_later(contact_id, claimed_by=workers.current_id())
        raise


def _release_claim(contact_id: int) -> bool:
    """Give this process's claim of ``contact_id`` back (no attempt spent);
    False when the database cannot be reached now."""
    try:
        workers.give_back_claims([contact_id], claimed_by=workers.current_id(), now=utcnow())
        return True
    except DATABASE_DOWN:
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
    since = _unconfirmed_since(contact)
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


def _unconfirmed_since(contact: Contact) -> datetime:
    """From when the gateway's history is searched for the unanswered send:
    a little before its failure was recorded (the request left earlier)."""
    recorded = (
        Event.select(fn.MAX(Event.created_at))
        .where((Event.contact == contact.id) & (Event.kind == EVENT_UNCONFIRMED))
        .scalar()
    ) or contact.created_at
    return recorded - timedelta(seconds=AMBIGUOUS_LOOKBACK_SECONDS)


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
    deadline = time.monotonic() + RECORD_DEADLINE.total_seconds()
    tries = 0
    while True:
        try:
            with write_transaction():
                return work()
        except DATABASE_DOWN as exc:
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
    """The gateway refused or did not answer: fail the contact for good, or
    retry it soon (the broker) or later (the database)."""
    now = utcnow()
    if error.instance_down:
        return _defer_instance_down(contact, error, queue_id=queue_id, now=now)
    ambiguous = bool(getattr(error, "ambiguous", False))
    # An unanswered send may have gone out: it is never failed unchecked; the
    # next attempt asks the gateway first (see _confirm_earlier_send).
    final = not ambiguous and (not error.transient or contact.attempts >= contact.tenant.max_attempts)
    quick = ambiguous or contact.attempts <= QUICK_RETRIES

    def record() -> transitions.Moved:
        return _move_failed(contact, error, now=now, ambiguous=ambiguous, final=final, quick=quick)

    moved = _durably(record, what="send failure", contact_id=contact.id)
    if final:
        report = SendReport(Outcome.FAILED, contact.id, queue_id, error.reason)
        report.callbacks = moved.callbacks + complete_if_done(contact.queue_id)
        return report
    if quick:
        return SendReport(Outcome.RETRY, contact.id, queue_id, error.reason)
    return SendReport(Outcome.DEFERRED, contact.id, queue_id, error.reason)


def _defer_instance_down(contact: Contact, error: GatewayError, *, queue_id: str, now: datetime) -> SendReport:
    """Not the contact's fault: give it back without using up an attempt and
    mark the instance down; dispatch books it again on a healthy instance."""
    def give_back() -> None:
        _give_back(contact, now=now)
        Event.create(contact=contact.id, kind="send_error", detail={"reason": error.reason, "instance_down": True},
                     created_at=now)

    _durably(give_back, what="give-back", contact_id=contact.id)
    health.record_state(contact.instance_id, health.DOWN, reason=error.reason, now=now)
    return SendReport(Outcome.DEFERRED, contact.id, queue_id, error.reason)


def _move_failed(contact: Contact, error: GatewayError, *, now: datetime, ambiguous: bool, final: bool,
                 quick: bool) -> transitions.Moved:
    """The failed attempt's move (one transaction): sending -> failed, back to
    queued for a broker retry, or back to pending until a later attempt."""
    detail = {"reason": error.reason, "transient": error.transient, **({"ambiguous": True} if ambiguous else {})}
    common = {"now": now, "detail": detail, "reason": error.reason, "outcome_unknown": ambiguous}
    if ambiguous:
        Event.create(contact=contact.id, kind=EVENT_UNCONFIRMED, detail={"reason": error.reason}, created_at=now)
    if final:
        return transitions.move_contacts(transitions.SEND_FAILED, _mine(contact), **common)
    if quick:
        # Back to queued so the retried message can claim it again; no
        # slot yet: the retry books its own (see _rebook_retry).
        return transitions.move_contacts(transitions.RETRY_SOON, _mine(contact), enqueued_at=now, **common)
    delay = DATABASE_RETRY_DELAYS[min(contact.attempts - QUICK_RETRIES, len(DATABASE_RETRY_DELAYS)) - 1]
    return transitions.move_contacts(transitions.RETRY_LATER, _mine(contact), next_attempt_at=now + delay, **common)

