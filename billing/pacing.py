"""Send pace per WhatsApp instance, kept as a reservation in the database.

Each instance has ``next_slot_at``: the earliest moment its next message may
go. Booking slots reads and advances it under a row lock (PostgreSQL) or the
database write lock (SQLite), so any number of worker processes and threads
share one pace without Redis.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta

from billing.db import locked
from billing.models import Instance

SECONDS_PER_MINUTE = 60


def interval_seconds(messages_per_minute: float) -> float:
    """Seconds between two sends at ``messages_per_minute``."""
    return SECONDS_PER_MINUTE / messages_per_minute


def book_slots(instance_id: int, *, now: datetime, horizon: timedelta, limit: int) -> list[datetime]:
    """Book up to ``limit`` consecutive send slots that start before ``now + horizon``.

    Must run inside a write transaction; the booking is part of it, so a
    rolled-back dispatch gives its slots back.

    Parameters:
      instance_id: the instance whose pace applies.
      now: the current time (naive UTC).
      horizon: how far ahead slots may be booked.
      limit: how many slots are wanted at most.

    Returns:
      The booked times, ascending (possibly fewer than ``limit``, or none).
    """
    instance = locked(Instance.select().where(Instance.id == instance_id)).get()
    step = timedelta(seconds=interval_seconds(instance.messages_per_minute))
    slot = max(now, instance.next_slot_at or now)
    end = now + horizon
    slots: list[datetime] = []
    while len(slots) < limit and slot <= end:
        slots.append(slot)
        slot += step
    if slots:
        Instance.update(next_slot_at=slot).where(Instance.id == instance_id).execute()
    return slots


def tenant_rate(tenant_id: int) -> float:
    """Messages per minute the tenant's active instances send together."""
    return sum(
        i.messages_per_minute
        for i in Instance.select(Instance.messages_per_minute).where(
            (Instance.tenant == tenant_id) & (Instance.is_active == True)  # noqa: E712
        )
    )


def estimate_minutes(tenant_id: int, contacts: int) -> int:
    """Minutes the tenant's instances need to send ``contacts`` messages at their pace."""
    rate = tenant_rate(tenant_id)
    if contacts <= 0 or rate <= 0:
        return 0
    return max(1, math.ceil(contacts / rate))
