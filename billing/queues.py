"""A queue's status as the caller sees it, and the caller's controls.

Counters are derived from the contacts with one grouped count (indexed by
queue and status), so no send ever has to update a shared counter row.
"""
from __future__ import annotations

import uuid
from datetime import timedelta

from peewee import fn

from billing.clock import as_utc_iso, utcnow
from billing.db import write_transaction
from billing.errors import Conflict, NotFound
from billing import callbacks, pacing, windows
from billing.models import Campaign, Contact, Queue, Tenant
from billing.states import ContactStatus, QueueStatus

#: The window over which ``current_rate`` (messages per minute) is measured.
RATE_WINDOW = timedelta(minutes=5)

#: Queue.pause_kind of a pause the caller asked for (only the caller resumes it).
MANUAL_PAUSE = "manual"

#: pause_reason when the caller pauses without giving one.
DEFAULT_PAUSE_REASON = "Pausado via API"


def get_queue(queue_id, *, tenant_id: int) -> Queue:
    """The tenant's queue, or NotFound (also for another tenant's queue)."""
    queue = Queue.get_or_none((Queue.id == _uuid_or_none(queue_id)) & (Queue.tenant == tenant_id))
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
    return {status: n for status, n in rows}


def queue_status(queue: Queue) -> dict:
    """The seed's status document, plus a few extra counters."""
    now = utcnow()
    counts = counts_by_status(queue.id)
    total = queue.total_contacts
    sent = sum(counts.get(s, 0) for s in ContactStatus.DELIVERED_TO_GATEWAY)
    delivered = counts.get(ContactStatus.DELIVERED, 0) + counts.get(ContactStatus.READ, 0)
    open_count = sum(counts.get(s, 0) for s in ContactStatus.OPEN)
    pending_retry = (
        Contact.select()
        .where((Contact.queue == queue.id) & Contact.status.in_(ContactStatus.OPEN) & (Contact.attempts > 0))
        .count()
        if open_count
        else 0
    )
    done = total - open_count
    rate = _current_rate(queue.id, now=now)
    return {
        "id": str(queue.id),
        "billing_campaign_id": str(queue.campaign_id),
        "status": queue.status,
        "status_display": QueueStatus.LABELS.get(queue.status, queue.status),
        "total_contacts": total,
        "contacts_sent": sent,
        "contacts_delivered": delivered,
        "contacts_read": counts.get(ContactStatus.READ, 0),
        "contacts_failed": counts.get(ContactStatus.FAILED, 0),
        "contacts_pending": open_count,
        "contacts_pending_retry": pending_retry,
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
    if queue.status in QueueStatus.FINAL or open_count == 0 or queue.pause_kind == "manual":
        return None
    campaign_type = Campaign.select(Campaign.type).where(Campaign.id == queue.campaign_id).scalar()
    start = max(now, queue.resume_at) if queue.resume_at else now
    seconds = pacing.sending_seconds(queue.tenant_id, open_count)
    if seconds <= 0:
        return None
    return as_utc_iso(windows.finish_time(Tenant.get_by_id(queue.tenant_id), campaign_type, seconds=seconds, now=start))


def pause(queue: Queue, *, reason: str = "") -> bool:
    """Stop sending. Contacts already booked go back to pending when their
    turn comes. Returns False when the queue was already paused."""
    updated = (
        Queue.update(status=QueueStatus.PAUSED, pause_kind=MANUAL_PAUSE, pause_reason=reason or DEFAULT_PAUSE_REASON,
                     resume_at=None, next_dispatch_at=None, updated_at=utcnow())
        .where((Queue.id == queue.id) & Queue.status.in_((*QueueStatus.RUNNING, QueueStatus.INSTANCE_DOWN)))
        .execute()
    )
    if updated:
        return True
    current = Queue.get_by_id(queue.id)
    if current.status == QueueStatus.PAUSED:
        return False
    raise Conflict(f"queue is {current.status}; it cannot be paused")


def resume(queue: Queue) -> bool:
    """Let a paused queue send again. The caller must then enqueue dispatch.
    Returns False when it was not paused (already running)."""
    updated = (
        Queue.update(status=QueueStatus.PROCESSING, pause_kind="", pause_reason="", resume_at=None,
                     next_dispatch_at=None, updated_at=utcnow())
        .where((Queue.id == queue.id) & Queue.status.in_((QueueStatus.PAUSED, QueueStatus.INSTANCE_DOWN)))
        .execute()
    )
    if updated:
        return True
    current = Queue.get_by_id(queue.id)
    if current.status in QueueStatus.RUNNING:
        return False
    raise Conflict(f"queue is {current.status}; it cannot be resumed")


def cancel(queue: Queue) -> bool:
    """End the queue: contacts not yet claimed by a worker end ``cancelled``
    (a send already in flight finishes). Returns False when already cancelled."""
    now = utcnow()
    with write_transaction():
        updated = (
            Queue.update(status=QueueStatus.CANCELLED, completed_at=now, updated_at=now)
            .where((Queue.id == queue.id) & ~Queue.status.in_(QueueStatus.FINAL))
            .execute()
        )
        if updated:
            Contact.update(
                status=ContactStatus.CANCELLED, reason="cancelled by caller", finished_at=now, updated_at=now
            ).where((Contact.queue == queue.id) & Contact.status.in_((ContactStatus.PENDING, ContactStatus.QUEUED))).execute()
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
        completed = (
            Queue.update(status=QueueStatus.COMPLETED, completed_at=now, updated_at=now)
            .where((Queue.id == queue_id) & Queue.status.in_(QueueStatus.RUNNING) & ~fn.EXISTS(still_open))
            .execute()
        )
        if not completed:
            return []
        delivery = callbacks.emit_queue_completed(queue_id, queue_status(Queue.get_by_id(queue_id)), now=now)
    return [delivery] if delivery else []
