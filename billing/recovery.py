"""Finding work the broker lost, a dead worker held, or the clock released,
so no contact or queue stays in limbo.

The database says what is left to do; these functions turn that into queue
ids to dispatch. They are safe to run at any time and from any process:
dispatch and the send claim are idempotent. Lost work is found directly, in
seconds: a claim names its worker, and a worker that stopped beating holds
nothing (billing.workers); a booking says whether its broker message was
published (``contact.enqueued_at``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from peewee import fn

from billing import callbacks, health, inbound, transitions, workers
from billing.adapters.db import write_transaction
from billing.adapters.models import Contact, Queue
from billing.clock import utcnow
from billing.domain.states import ContactStatus, QueueStatus
from billing.instances import tenants_with_healthy_instances
from billing.queues import complete_if_done, resume_queues

#: A booked contact whose slot passed this long ago without a worker claiming
#: it has lost its published broker message (a broker that lost its queues).
#: Long, because a message also waits behind a backlog of due sends.
LOST_MESSAGE_GRACE = timedelta(minutes=5)

#: A booking whose broker message was never published (the dispatch died
#: between its commit and its publish) is given back after this long: more
#: than one dispatch pass takes to publish its batch.
UNPUBLISHED_GRACE = timedelta(seconds=10)

#: A claim older than this is released even if its worker cannot be told dead
#: (claims of processes that never registered, or while the database came up
#: too recently to judge heartbeats): longer than a send may take.
DEFAULT_CLAIM_TIMEOUT = timedelta(minutes=5)

#: Pauses the scheduler lifts on its own once resume_at has passed.
AUTOMATIC_PAUSES = (health.PAUSE_HOURS, health.PAUSE_DAILY_CAP)

#: A contact waiting for a broker retry (queued, no slot) whose message has not
#: come this long after the failure lost it: longer than the longest backoff.
LOST_RETRY_GRACE = timedelta(minutes=15)

#: A dispatch chain whose next run is overdue by this much lost its message
#: (a worker killed between its booking's commit and the publish of the next
#: run). Short: a second dispatch of a queue only books what is still due.
LOST_CHAIN_GRACE = timedelta(seconds=5)


def release_lost_bookings(*, now: datetime | None = None, grace: timedelta = LOST_MESSAGE_GRACE) -> int:
    """queued -> pending for bookings whose message never came: never
    published, or published and lost; returns how many."""
    now = now or utcnow()
    unpublished = Contact.enqueued_at.is_null() & Contact.slot_at.is_null(False) & (
        Contact.updated_at <= now - min(grace, UNPUBLISHED_GRACE))
    lost_booking = Contact.slot_at < now - grace
    # grace 0 (start-up of the embedded mode: the broker is empty) means every one.
    retry_grace = max(grace, LOST_RETRY_GRACE) if grace else grace
    lost_retry = Contact.slot_at.is_null() & (Contact.updated_at <= now - retry_grace)
    return len(transitions.move_contacts(
        transitions.RELEASE_LOST, unpublished | lost_booking | lost_retry, now=now))


def release_dead_claims(*, now: datetime | None = None, timeout: timedelta = DEFAULT_CLAIM_TIMEOUT) -> int:
    """sending -> pending for claims whose worker died (kill -9, crash, a
    machine gone): at once when its heartbeat says so, after ``timeout``
    when nothing can be said.

    Such a contact may have reached WhatsApp just before the worker died; it
    is sent again, which is preferred to never sending it. Its attempt counts.
    """
    now = now or utcnow()
    live = workers.live_ids(now=now)
    too_old = Contact.claimed_at < now - timeout
    if live is None:  # the database just came up: a stale beat proves nothing yet
        dead = too_old
    else:
        dead = too_old | (~Contact.claimed_by.in_(live or [""]) & (Contact.claimed_by != "")
                          & (Contact.claimed_at < now - workers.DEAD_AFTER))
    return len(transitions.move_contacts(
        transitions.RELEASE_DEAD_CLAIM, dead, now=now, reason="send interrupted"))


def release_stuck_claims(*, now: datetime | None = None, timeout: timedelta = DEFAULT_CLAIM_TIMEOUT) -> int:
    """Claims older than ``timeout``, whoever holds them (see release_dead_claims)."""
    now = now or utcnow()
    return len(transitions.move_contacts(
        transitions.RELEASE_DEAD_CLAIM, Contact.claimed_at < now - timeout, now=now, reason="send interrupted"))


def resume_due_pauses(*, now: datetime | None = None) -> list[str]:
    """Lift the pauses that time ends (business hours opened, daily cap reset)
    and instance_down where the tenant has a healthy instance again.
    Returns the queue ids to dispatch."""
    now = now or utcnow()
    timed = (Queue.status == QueueStatus.PAUSED) & Queue.pause_kind.in_(AUTOMATIC_PAUSES) & (Queue.resume_at <= now)
    waiting = (Queue.status == QueueStatus.INSTANCE_DOWN) & Queue.tenant.in_(tenants_with_healthy_instances())
    return resume_queues(where=timed | waiting, now=now)


def release_in_memory_work(*, now: datetime | None = None) -> dict[str, int]:
    """Give back everything the in-memory broker of a stopped ``billing run``
    held, so a restart resumes its campaigns at once.

    Call at start-up of the embedded mode, before its worker starts, and only
    in the process that leads on this database: no other process sends, so
    every claim was the previous process's, and no booking, whatever its slot,
    has a broker message any more.

    - Claims go back to pending (the attempt counts).
    - Every booking goes back to pending, and its slot back to the pace and
      the caps (billing.transitions), so the next booking starts now rather
      than after the lost bookings' horizon.
    - Dispatch chains are forgotten, so recovery dispatches their queues now.

    Returns:
      How many claims, bookings and chains were reset.
    """
    now = now or utcnow()
    with write_transaction():
        # Bookings first: the claims hold the earliest slots, so the pace is
        # rewound to the first of all once both are given back.
        bookings = len(transitions.move_contacts(
            transitions.RELEASE_LOST, Contact.status == ContactStatus.QUEUED, now=now))
        claims = len(transitions.move_contacts(
            transitions.RELEASE_DEAD_CLAIM, Contact.status == ContactStatus.SENDING, now=now,
            reason="send interrupted"))
        chains = Queue.update(next_dispatch_at=None).where(
            Queue.status.in_(QueueStatus.RUNNING) & Queue.next_dispatch_at.is_null(False)
        ).execute()
    return {"claims": claims, "bookings": bookings, "chains": chains}


def queues_with_due_work(*, now: datetime | None = None, grace: timedelta = LOST_CHAIN_GRACE) -> list[str]:
    """Running queues that have a contact due to be booked and no live
    dispatch chain (none, or one whose next run is overdue by ``grace``:
    its broker message was lost)."""
    now = now or utcnow()
    # Per queue, so the cost follows the running queues, not the backlog.
    due = Contact.select(Contact.id).where(
        (Contact.queue == Queue.id)
        & (Contact.status == ContactStatus.PENDING)
        & ((Contact.next_attempt_at.is_null()) | (Contact.next_attempt_at <= now))
    )
    no_chain = Queue.next_dispatch_at.is_null() | (Queue.next_dispatch_at < now - grace)
    queues = Queue.select(Queue.id).where(Queue.status.in_(QueueStatus.RUNNING) & no_chain & fn.EXISTS(due))
    ids = [q.id for q in queues]
    if ids:
        # The lost chain is over; the dispatch about to be sent starts a new one.
        Queue.update(next_dispatch_at=None).where(Queue.id.in_(ids)).execute()
    return [str(i) for i in ids]


def complete_finished_queues() -> list[str]:
    """Complete running queues with no open contact left (their last contacts
    ended by an opt-out or a cancel rather than a send). Returns callback ids."""
    still_open = Contact.select(Contact.id).where((Contact.queue == Queue.id) & Contact.status.in_(ContactStatus.OPEN))
    deliveries: list[str] = []
    for queue in Queue.select(Queue.id).where(Queue.status.in_(QueueStatus.RUNNING) & ~fn.EXISTS(still_open)):
        deliveries += complete_if_done(queue.id)
    return deliveries


@dataclass
class Recovered:
    """Queue ids to dispatch, callback deliveries and auto-replies to enqueue,
    and how many lost bookings and dead claims were given back."""

    queues: list[str]
    callbacks: list[str]
    auto_replies: list[int] = field(default_factory=list)
    released_bookings: int = 0
    released_claims: int = 0


def recover(*, now: datetime | None = None, claim_timeout: timedelta = DEFAULT_CLAIM_TIMEOUT) -> Recovered:
    """One recovery pass."""
    now = now or utcnow()
    bookings = release_lost_bookings(now=now)
    claims = release_dead_claims(now=now, timeout=claim_timeout)
    resumed = resume_due_pauses(now=now)
    finished = complete_finished_queues()
    workers.forget_old(now=now)
    return Recovered(
        queues=list(dict.fromkeys(resumed + queues_with_due_work(now=now))),
        callbacks=finished + callbacks.due(now=now),
        auto_replies=inbound.unanswered_questions(now=now),
        released_bookings=bookings,
        released_claims=claims,
    )
