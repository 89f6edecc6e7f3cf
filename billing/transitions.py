"""Every state change of a contact or a queue, in one table.

A contact or queue changes state only through :func:`move_contacts` or
:func:`move_queues`: one conditional UPDATE (``WHERE status IN sources``) that
returns the rows it changed, followed by what that transition does to the rest
of the system: the attempt counter, the daily caps, the history, the caller's
callbacks. A transition that lost a race changes nothing and does nothing.

Reading the tables below answers "what happens when a contact goes from X to
Y" without hunting through the code.

The daily caps count what the gateway accepted: booking a slot reserves one
message of today's cap (``instance.day_count``, ``tenant.day_count``), and every
transition that leaves a booked slot unsent (``releases_slot``) gives it back,
so a cancel, a pause, a failure or a lost booking never eats the cap. A send
the gateway accepted (``counts_send``) adds to the instance's ``sent_count``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime

from peewee import Expression

from billing import callbacks, pacing
from billing.adapters.db import database, write_transaction
from billing.adapters.models import Contact, Event, Queue
from billing.domain.states import ContactStatus as C
from billing.domain.states import QueueStatus as Q


@dataclass(frozen=True)
class ContactTransition:
    """One arrow of the contact life cycle.

    Parameters:
      name: what the move is called in events and logs.
      sources: states the contact may be in; any other state loses the race.
      target: the new state.
      attempts: added to ``attempts`` (+1 a claim; -1 a send given back
        without counting).
      releases_slot: the booked slot goes unused: give it back to the caps.
      counts_send: the gateway accepted the message (``sent_count``).
      final: the contact is done (``finished_at`` is set).
      event: the history entry written for each moved contact (None: none).
      callback: the caller's callback event emitted (None: none).
      clears_booking: forget the slot (and its broker message).
    """

    name: str
    sources: tuple[str, ...]
    target: str
    attempts: int = 0
    releases_slot: bool = False
    counts_send: bool = False
    final: bool = False
    event: str | None = None
    callback: str | None = None
    clears_booking: bool = False


_BOOKED = (C.QUEUED, C.SENDING)

#: Dispatch booked a send slot (pending -> queued).
BOOK = ContactTransition("book", (C.PENDING,), C.QUEUED)
#: A worker took the contact to send it.
CLAIM = ContactTransition("claim", (C.QUEUED,), C.SENDING, attempts=+1)
#: The gateway accepted the message. Also from pending/queued: a record that
#: waited out a database outage wins over the resend its released claim would
#: otherwise get (billing.sending restricts it to its own contact).
SEND_ACCEPTED = ContactTransition("sent", (C.SENDING, C.PENDING, C.QUEUED), C.SENT, counts_send=True, event="sent", callback="sent")
#: The send failed for good (permanent error or attempts used up).
SEND_FAILED = ContactTransition("failed", (C.SENDING,), C.FAILED, releases_slot=True, final=True, event="failed",
                                callback="failed", clears_booking=True)
#: A transient failure retried by the broker soon (the retry books its own slot).
RETRY_SOON = ContactTransition("retry_soon", (C.SENDING,), C.QUEUED, releases_slot=True, event="send_error",
                               clears_booking=True)
#: A transient failure retried from the database later (next_attempt_at).
RETRY_LATER = ContactTransition("retry_later", (C.SENDING,), C.PENDING, releases_slot=True, event="send_error",
                                clears_booking=True)
#: Not the contact's fault (instance down, hours closed, no slot soon): back to
#: pending without using up an attempt.
GIVE_BACK = ContactTransition("give_back", (C.SENDING,), C.PENDING, attempts=-1, releases_slot=True,
                              clears_booking=True)
#: A retry booked its slot of the pace: wait for it in the broker.
REBOOK = ContactTransition("rebook", (C.SENDING,), C.QUEUED, attempts=-1)
#: The instance's floor is closed for a while: back to the broker, same slot.
REQUEUE = ContactTransition("requeue", (C.SENDING,), C.QUEUED, attempts=-1)
#: The queue stopped (paused, instance down) while the contact was booked.
UNBOOK = ContactTransition("unbook", (C.QUEUED,), C.PENDING, releases_slot=True, clears_booking=True)
#: A booking whose broker message never came (dispatch died before publishing,
#: broker lost it).
RELEASE_LOST = ContactTransition("release_lost", (C.QUEUED,), C.PENDING, releases_slot=True, clears_booking=True)
#: The worker holding the claim died mid-send; the attempt counts.
RELEASE_DEAD_CLAIM = ContactTransition("release_dead_claim", (C.SENDING,), C.PENDING, releases_slot=True,
                                       event="send_interrupted", clears_booking=True)
#: The caller cancelled the queue.
CANCEL = ContactTransition("cancel", (C.PENDING, C.QUEUED), C.CANCELLED, releases_slot=True, final=True,
                           clears_booking=True)
#: The phone opted out.
OPT_OUT = ContactTransition("opt_out", (C.PENDING, C.QUEUED), C.OPTED_OUT, releases_slot=True, final=True,
                            event="opted_out", clears_booking=True)
#: Gateway acks move a sent message forward only.
ACK_DELIVERED = ContactTransition("delivered", (C.SENT,), C.DELIVERED, event="delivered", callback="delivered")
ACK_READ = ContactTransition("read", (C.SENT, C.DELIVERED), C.READ, event="read", callback="read")
ACK_FAILED = ContactTransition("ack_failed", (C.SENT,), C.FAILED, final=True, event="failed", callback="failed")

CONTACT_TRANSITIONS = (
    BOOK, CLAIM, SEND_ACCEPTED, SEND_FAILED, RETRY_SOON, RETRY_LATER, GIVE_BACK, REBOOK, REQUEUE, UNBOOK,
    RELEASE_LOST, RELEASE_DEAD_CLAIM, CANCEL, OPT_OUT, ACK_DELIVERED, ACK_READ, ACK_FAILED,
)


@dataclass
class Moved:
    """The contacts a transition changed, and the callbacks it committed.

    Parameters:
      ids: the contacts moved.
      callbacks: callback deliveries (their rows are in this transaction) to
        hand to the broker after the commit.
    """

    ids: list[int]
    callbacks: list[str]

    def __bool__(self) -> bool:
        return bool(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


def move_contacts(
    transition: ContactTransition, where: Expression, *, now: datetime, detail: dict | None = None, **fields
) -> Moved:
    """Apply ``transition`` to the contacts matching ``where`` that are in one
    of its source states; run inside a write transaction when it has effects.

    Parameters:
      transition: one of the ``ContactTransition`` constants of this module.
      where: which contacts (e.g. ``Contact.id == 5``).
      now: the time of the change (naive UTC).
      detail: extra fields of the history entry.
      fields: further columns to set (reason, slot_at, next_attempt_at...).

    Returns:
      What moved.
    """
    values = dict(status=transition.target, updated_at=now, **fields)
    if transition.attempts:
        values["attempts"] = Contact.attempts + transition.attempts
    if transition.final:
        values.setdefault("finished_at", now)
    with _transaction():
        # RETURNING gives the new row: the slot is cleared by a second
        # statement, so the first one still returns the slot that was booked.
        rows = list(
            Contact.update(**values)
            .where(where & Contact.status.in_(transition.sources))
            .returning(Contact.id, Contact.instance, Contact.attempts, Contact.slot_at)
            .tuples()
            .execute()
        )
        if not rows:
            return Moved(ids=[], callbacks=[])
        ids = [row[0] for row in rows]
        if transition.clears_booking:
            cleared = {"slot_at": None, "enqueued_at": None}
            cleared.update({name: fields[name] for name in cleared if name in fields})
            Contact.update(**cleared).where(Contact.id.in_(ids)).execute()
        if transition.releases_slot:
            pacing.release_slots([(row[1], row[3]) for row in rows if row[1] is not None and row[3] is not None])
        if transition.counts_send:
            for _, instance_id, _, _ in rows:
                if instance_id is not None:
                    pacing.count_sent(instance_id, at=now)
        if transition.event:
            Event.insert_many(
                [{"contact": contact_id, "kind": transition.event, "detail": {**(detail or {}), "attempt": attempts},
                  "created_at": now} for contact_id, _, attempts, _ in rows]
            ).execute()
        deliveries = []
        if transition.callback:
            for contact_id in ids:
                delivery = callbacks.emit_for_contact(contact_id, transition.callback, now=now)
                if delivery:
                    deliveries.append(delivery)
    return Moved(ids=ids, callbacks=deliveries)


def _transaction():
    """The caller's transaction if there is one, else a new write transaction
    (a transition and its effects commit together)."""
    if database.in_transaction():
        return contextlib.nullcontext()
    return write_transaction()


@dataclass(frozen=True)
class QueueTransition:
    """One arrow of the queue life cycle.

    Parameters:
      name: what the move is called in logs.
      sources: states the queue may be in.
      target: the new state.
      unbooks: the queue stops sending: its booked, unclaimed contacts go back
        to pending and give their slots back (claimed ones finish).
      ends_chain: forget the queue's dispatch chain (a new one starts on resume).
      final: set ``completed_at``.
    """

    name: str
    sources: tuple[str, ...]
    target: str
    unbooks: bool = False
    ends_chain: bool = True
    final: bool = False


_STOPPED = (Q.PAUSED, Q.INSTANCE_DOWN)

#: The reason of contacts a cancel ended.
CANCELLED_REASON = "cancelled by caller"

#: Dispatch's first pass.
START = QueueTransition("start", (Q.PENDING,), Q.PROCESSING, ends_chain=False)
#: The caller paused it (only the caller resumes).
PAUSE = QueueTransition("pause", (*Q.RUNNING, Q.INSTANCE_DOWN), Q.PAUSED, unbooks=True)
#: Business hours closed, or a daily cap reached: the scheduler resumes it.
PAUSE_AUTOMATIC = QueueTransition("pause_automatic", Q.RUNNING, Q.PAUSED, unbooks=True)
#: No healthy instance left.
INSTANCE_DOWN = QueueTransition("instance_down", Q.RUNNING, Q.INSTANCE_DOWN, unbooks=True)
#: The caller resumed it, or its pause ended (hours open, an instance is back).
RESUME = QueueTransition("resume", _STOPPED, Q.PROCESSING)
#: No open contact is left.
COMPLETE = QueueTransition("complete", Q.RUNNING, Q.COMPLETED, final=True)
#: The caller cancelled it (its open, unclaimed contacts are cancelled too).
CANCEL_QUEUE = QueueTransition("cancel", (*Q.RUNNING, *_STOPPED), Q.CANCELLED, final=True)

QUEUE_TRANSITIONS = (START, PAUSE, PAUSE_AUTOMATIC, INSTANCE_DOWN, RESUME, COMPLETE, CANCEL_QUEUE)


def move_queues(transition: QueueTransition, where: Expression, *, now: datetime, **fields) -> list:
    """Apply ``transition`` to the queues matching ``where`` in one of its
    source states, with its effect on their contacts. Run inside a write
    transaction.

    Parameters:
      transition: one of the ``QueueTransition`` constants of this module.
      where: which queues.
      now: the time of the change.
      fields: further columns (pause_kind, pause_reason, resume_at...).

    Returns:
      The ids of the queues moved (a ``complete`` emits no callback here:
      see billing.queues.complete_if_done, which builds the status it reports).
    """
    values = dict(status=transition.target, updated_at=now, **fields)
    if transition.ends_chain:
        values["next_dispatch_at"] = None
    if transition.final:
        values.setdefault("completed_at", now)
    if transition is RESUME:
        values.update(pause_kind="", pause_reason="", resume_at=None)
    if transition is START:
        values.setdefault("started_at", now)
    with _transaction():
        ids = [
            row[0]
            for row in Queue.update(**values)
            .where(where & Queue.status.in_(transition.sources))
            .returning(Queue.id)
            .tuples()
            .execute()
        ]
        if ids and transition.unbooks:
            move_contacts(UNBOOK, Contact.queue.in_(ids), now=now)
        if ids and transition is CANCEL_QUEUE:
            move_contacts(CANCEL, Contact.queue.in_(ids), now=now, reason=CANCELLED_REASON)
    return ids
