"""Finding work the broker lost, so no contact stays in limbo.

The database says what is left to do; these functions turn that into queue ids
to dispatch again. They are safe to run at any time and from any process:
dispatch and the send claim are idempotent.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from billing.clock import utcnow
from billing.models import Contact, Queue
from billing.states import ContactStatus, QueueStatus

#: A booked contact whose slot passed this long ago without a worker claiming
#: it has lost its broker message (broker restart, embedded mode stopped).
LOST_MESSAGE_GRACE = timedelta(minutes=5)


def release_lost_bookings(*, now: datetime | None = None, grace: timedelta = LOST_MESSAGE_GRACE) -> int:
    """queued -> pending for bookings whose message never came; returns how many."""
    now = now or utcnow()
    return (
        Contact.update(status=ContactStatus.PENDING, slot_at=None, updated_at=now)
        .where((Contact.status == ContactStatus.QUEUED) & (Contact.slot_at < now - grace))
        .execute()
    )


def release_interrupted_sends(*, now: datetime | None = None) -> int:
    """sending -> pending for claims whose worker is gone (embedded restart).

    Only safe when no worker can be running: at start-up of the embedded mode.
    Such a contact may have reached WhatsApp before the stop; sending it again
    is preferred to never sending it.
    """
    now = now or utcnow()
    return (
        Contact.update(status=ContactStatus.PENDING, slot_at=None, updated_at=now)
        .where(Contact.status == ContactStatus.SENDING)
        .execute()
    )


def queues_with_due_work(*, now: datetime | None = None) -> list[str]:
    """Running queues that have a contact due to be booked, or nothing open
    left (so dispatch can complete them)."""
    now = now or utcnow()
    due = Contact.select(Contact.queue).where(
        (Contact.status == ContactStatus.PENDING)
        & ((Contact.next_attempt_at.is_null()) | (Contact.next_attempt_at <= now))
    )
    return [str(q.id) for q in Queue.select(Queue.id).where(Queue.status.in_(QueueStatus.RUNNING) & Queue.id.in_(due))]
