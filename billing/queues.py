"""A queue's status as the caller sees it, and the caller's controls.

Counters are derived from the contacts with one grouped count (indexed by
queue and status), so no send ever has to update a shared counter row.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta

from peewee import Expression, fn

from billing import callbacks, pacing, transitions, windows, workers
from billing.adapters.db import write_transaction
from billing.adapters.models import Campaign, Contact, Queue, Tenant
from billing.clock import as_utc_iso, utcnow
from billing.domain.states import ContactStatus, QueueStatus
from billing.errors import Conflict, NotFound

#: The window over which ``current_rate`` (messages per minute) is measured.
RATE_WINDOW = timedelta(minutes=5)

#: Queue.pause_kind of a pause the caller asked for (only the caller resumes it).
MANUAL_PAUSE = "manual"

#: pause_reason when the caller pauses without giving one.
DEFAULT_PAUSE_REASON = "Pausado via API"


def get_queue(queue_id, *, tenant_id: int, types: Iterable[str] | None = None) -> Queue:
    """The tenant's queue, or NotFound (also for another tenant's queue).

    Parameters:
      queue_id: the queue's id (any text: a malformed one is not found).
      tenant_id: the caller's tenant.
      types: the message types the caller may see (an API key's scope);
        a queue of another type is not found either, so a key cannot probe
        or control what it may not send. None: every type.
    """
    where = (Queue.id == _uuid_or_none(queue_id)) & (Queue.tenant == tenant_id)
    if types is not None:
        where &= Queue.campaign.in_(Campaign.select(Campaign.id).where(Campaign.type.in_(list(types))))
    queue = Queue.get_or_none(where)
    if queue is None:
        raise NotFound("queue not found")
    return queue


def _uuid_or_none(value):
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def counts_by_status(queue_id) -> dict[str, int]:
    rows = (
        Contact.select(Contact.status, fn.COUNT(Contact.id).alias("n"))
        .where(Contact.queue == queue_id)
        .group_by(Contact.status)
        .tuples()
    )
    return dict(rows)


def queue_status(queue: Queue) -> dict:
    """The seed's status document, plus a few extra counters."""
    now = utcnow()
    counts = counts_by_status(queue.id)
    total = queue.total_contacts
    sent = sum(counts.get(s, 0) for s in ContactStatus.DELIVERED_TO_GATEWAY)
    delivered = counts.get(ContactStatus.DELIVERED, 0) + counts.get(ContactStatus.READ, 0)
    open_count = sum(counts.get(s, 0) for s in ContactStatus.OPEN)
    pending_retry = _pending_retries(queue.id) if open_count else 0
    stalled = stalled_contacts(queue.id, now=now) if open_count and queue.status in QueueStatus.RUNNING else 0
    done = total - open_count
    rate = _current_rate(queue.id, now=now)
    return {
        "id": str(queue.id),
        "billing_campaign_id": str(queue.campaign_id),
        "status": queue.status,
        "status_display": _display(queue.status, stalled=stalled),
        "total_contacts": total,
        "contacts_sent": sent,
        "contacts_delivered": delivered,
        "contacts_read": counts.get(ContactStatus.READ, 0),
        "contacts_failed": counts.get(ContactStatus.FAILED, 0),
        "contacts_pending": open_count,
        "contacts_pending_retry": pending_retry,
        "contacts_stalled": stalled,
        "contacts_cancelled": counts.get(ContactStatus.CANCELLED, 0),
        "contacts_opted_out": counts.get(ContactStatus.OPTED_OUT, 0),
        "contacts_rejected": queue.rejected_contacts,
        "progress_percent": round(100.0 * done / total, 2) if total else 100.0,
        "current_rate": rate,
        "eta": _eta(queue, open_count=open_count, now=now),
        "created_at": as_utc_iso(queue.created_at),
        "started_at": as_utc_iso(queue.started_at),
        "completed_at": as_utc_iso(queue.completed_at),
        "pause_reason": queue.pause_reason,
        "resume_at": as_utc_iso(queue.resume_at),
    }


def _display(status: str, *, stalled: int) -> str:
    label = QueueStatus.LABELS.get(status, status)
    return f"{label} ({stalled} contato(s) parado(s))" if stalled else label


def _pending_retries(queue_id) -> int:
    """Open contacts waiting to be tried again after a failed attempt. A first
    attempt in flight (sending, attempts 1) is not a retry; a contact back in
    pending or queued after an attempt is, and so is a second attempt in flight."""
    waiting_again = Contact.status.in_((ContactStatus.PENDING, ContactStatus.QUEUED)) & (Contact.attempts > 0)
    retrying_now = (Contact.status == ContactStatus.SENDING) & (Contact.attempts > 1)
    return Contact.select().where((Contact.queue == queue_id) & (waiting_again | retrying_now)).count()


#: A booked contact whose slot passed this long ago without a worker claiming
#: it is late: its message is lost or the workers are behind or down.
STALL_AFTER = timedelta(seconds=30)


def stalled_contacts(queue_id, *, now) -> int:
    """Open contacts that should be moving and are not: booked ones whose slot
    is long past, and claims held by a worker that stopped beating. The
    status shows them (recovery releases them) instead of a receding ETA."""
    late = (Contact.status == ContactStatus.QUEUED) & (Contact.slot_at < now - STALL_AFTER)
    live = workers.live_ids(now=now)
    claims = Contact.status == ContactStatus.SENDING
    if live is None:
        dead_claims = claims & (Contact.claimed_at < now - STALL_AFTER - workers.DEAD_AFTER)
    else:
        dead_claims = claims & ~Contact.claimed_by.in_(live or [""]) & (Contact.claimed_at < now - workers.DEAD_AFTER)
    return Contact.select().where((Contact.queue == queue_id) & (late | dead_claims)).count()


def _current_rate(queue_id, *, now) -> float:
    """Messages per minute actually sent over the last RATE_WINDOW."""
    recent = (
        Contact.select()
        .where((Contact.queue == queue_id) & (Contact.sent_at >= now - RATE_WINDOW))
        .count()
    )
    return round(recent / (RATE_WINDOW.total_seconds() / 60), 2)


def _eta(queue: Queue, *, open_count: int, now) -> str | None:
    """When the open contacts will have been sent, at the tenant's pace and
    inside its hours; None when done, stopped by the caller, or unknown."""
    if queue.status in QueueStatus.FINAL or open_count == 0 or queue.pause_kind == MANUAL_PAUSE:
        return None
    campaign_type = Campaign.select(Campaign.type).where(Campaign.id == queue.campaign_id).scalar()
    start = max(now, queue.resume_at) if queue.resume_at else now
    seconds = pacing.sending_seconds(queue.tenant_id, open_count)
    if seconds <= 0:
        return None
    return as_utc_iso(windows.finish_time(Tenant.get_by_id(queue.tenant_id), campaign_type, seconds=seconds, now=start))


def pause(queue: Queue, *, reason: str = "") -> bool:
    """Stop sending. Booked contacts that no worker has claimed go back to
    pending at once and give their slots back to the daily caps; a send in
    flight finishes. Returns False when the queue was already paused."""
    if transitions.move_queues(transitions.PAUSE, Queue.id == queue.id, now=utcnow(), pause_kind=MANUAL_PAUSE,
                               pause_reason=reason or DEFAULT_PAUSE_REASON, resume_at=None):
        return True
    current = Queue.get_by_id(queue.id)
    if current.status == QueueStatus.PAUSED:
        return False
    raise Conflict(f"queue is {current.status}; it cannot be paused")


def resume_queues(*, where: Expression, now: datetime) -> list[str]:
    """Let the stopped queues matching ``where`` (paused, or waiting for an
    instance) send again: the one way a pause is lifted, by the caller,
    by the clock or by an instance coming back.

    Parameters:
      where: which queues (those not stopped are left alone).
      now: the time of the change (naive UTC).

    Returns:
      The ids of the queues resumed; the caller enqueues their dispatch.
    """
    return [str(queue_id) for queue_id in transitions.move_queues(transitions.RESUME, where, now=now)]


def resume(queue: Queue) -> bool:
    """Let a paused queue send again. The caller must then enqueue dispatch.
    Returns False when it was not paused (already running)."""
    if resume_queues(where=Queue.id == queue.id, now=utcnow()):
        return True
    current = Queue.get_by_id(queue.id)
    if current.status in QueueStatus.RUNNING:
        return False
    raise Conflict(f"queue is {current.status}; it cannot be resumed")


def cancel(queue: Queue) -> bool:
    """End the queue: contacts not yet claimed by a worker end ``cancelled``
    and give their slots back (a send already in flight finishes). Returns
    False when already cancelled."""
    if transitions.move_queues(transitions.CANCEL_QUEUE, Queue.id == queue.id, now=utcnow()):
        return True
    current = Queue.get_by_id(queue.id)
    if current.status == QueueStatus.CANCELLED:
        return False
    raise Conflict(f"queue is {current.status}; it cannot be cancelled")


def complete_if_done(queue_id) -> list[str]:
    """Mark a running queue completed once no contact is open (one statement,
    safe to call from every send), and emit ``queue.completed``.

    Returns:
      The callback deliveries to hand to the broker.
    """
    now = utcnow()
    still_open = Contact.select(Contact.id).where(
        (Contact.queue == queue_id) & Contact.status.in_(ContactStatus.OPEN)
    )
    with write_transaction():
        if not transitions.move_queues(transitions.COMPLETE, (Queue.id == queue_id) & ~fn.EXISTS(still_open), now=now):
            return []
        delivery = callbacks.emit_queue_completed(queue_id, queue_status(Queue.get_by_id(queue_id)), now=now)
    return [delivery] if delivery else []
