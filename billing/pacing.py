"""Send pace per WhatsApp instance, kept as a reservation in the database.

Each instance has ``next_slot_at``: the earliest moment its next message may
go. Booking slots reads and advances it under row locks (PostgreSQL) or the
database write lock (SQLite), so any number of worker processes and threads
share one pace without Redis.

The pace that keeps an unofficial number alive: a random gap between
``min_interval`` and ``max_interval``; a longer rest after every
``rest_every`` messages; a daily cap per instance and per tenant; and for a
new number a cap that ramps up over its first ``warmup_days``.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from billing.db import locked
from billing.models import Instance, Tenant

SECONDS_PER_MINUTE = 60

#: Without explicit bounds, gaps vary this much around 60 / messages_per_minute
#: (uniformly, so the mean is kept): regular gaps look like a robot.
DEFAULT_JITTER = 0.25

#: A rest lasts between rest_seconds and this many times it.
REST_SPREAD = 1.5

#: A warming-up number may send this many messages on its first day, twice
#: that on its second, and so on, until its daily cap (or the end of the ramp).
WARMUP_FIRST_DAY_CAP = 20

_rng = random.SystemRandom()


@dataclass(frozen=True)
class Pace:
    """How one instance spaces its messages.

    Parameters:
      min_interval, max_interval: bounds of the random gap (seconds).
      rest_every: rest after this many messages (0: never).
      rest_seconds: the shortest rest (seconds).
    """

    min_interval: float
    max_interval: float
    rest_every: int = 0
    rest_seconds: float = 0.0

    @classmethod
    def of(cls, instance: Instance) -> "Pace":
        mean = SECONDS_PER_MINUTE / instance.messages_per_minute
        low = instance.min_interval if instance.min_interval is not None else mean * (1 - DEFAULT_JITTER)
        high = instance.max_interval if instance.max_interval is not None else mean * (1 + DEFAULT_JITTER)
        return cls(min_interval=low, max_interval=max(low, high), rest_every=instance.rest_every,
                   rest_seconds=instance.rest_seconds)

    @property
    def mean_interval(self) -> float:
        """The average seconds per message, rests included."""
        mean = (self.min_interval + self.max_interval) / 2
        if self.rest_every:
            mean += self.rest_seconds * (1 + REST_SPREAD) / 2 / self.rest_every
        return mean

    def gap(self, *, sends_since_rest: int, rng: random.Random = _rng) -> tuple[float, int]:
        """Seconds until the next message after one more send, and the new
        count of sends since the last rest."""
        seconds = rng.uniform(self.min_interval, self.max_interval)
        sends = sends_since_rest + 1
        if self.rest_every and sends >= self.rest_every:
            return seconds + rng.uniform(self.rest_seconds, self.rest_seconds * REST_SPREAD), 0
        return seconds, sends


def daily_cap(*, cap: int, warmup_days: int, age_days: int) -> int:
    """Messages allowed today (0: no cap).

    Parameters:
      cap: the configured daily cap (0: none).
      warmup_days: length of the ramp for a new number (0: none).
      age_days: whole days since the instance was created.
    """
    if not warmup_days or age_days >= warmup_days:
        return cap
    ramp = WARMUP_FIRST_DAY_CAP * (age_days + 1)
    return min(cap, ramp) if cap else ramp


@dataclass
class Booking:
    """The outcome of :func:`book_slots`.

    Parameters:
      slots: booked send times (naive UTC), ascending.
      capped_until: set when a daily cap stopped the booking: the local
        midnight (naive UTC) after which sending may go on.
    """

    slots: list[datetime]
    capped_until: datetime | None = None


def book_slots(
    instance_id: int, *, now: datetime, until: datetime, limit: int, local_day, rng: random.Random = _rng
) -> Booking:
    """Book up to ``limit`` send slots of one instance, none after ``until``.

    Must run inside a write transaction: the booking is part of it, so a
    rolled-back dispatch gives its slots back. Locks the tenant row, then the
    instance row (always in that order, so two dispatches cannot deadlock).

    Parameters:
      instance_id: the instance whose pace applies.
      now: the current time (naive UTC).
      until: the latest slot that may be booked.
      limit: how many slots are wanted at most.
      local_day: callable(naive UTC datetime) -> (date, next local midnight as
        naive UTC) in the tenant's zone, for the daily caps.
      rng: the randomness of gaps and rests (tests pass a seeded one).
    """
    tenant_id = Instance.select(Instance.tenant).where(Instance.id == instance_id).scalar()
    tenant = locked(Tenant.select().where(Tenant.id == tenant_id)).get()
    instance = locked(Instance.select().where(Instance.id == instance_id)).get()
    pace = Pace.of(instance)
    age_days = max(0, (now - instance.created_at).days)
    instance_cap = daily_cap(cap=instance.daily_cap, warmup_days=instance.warmup_days, age_days=age_days)

    slot = max(now, instance.next_slot_at or now)
    sends_since_rest = instance.sends_since_rest
    counts = {"instance": (instance.day_key, instance.day_count), "tenant": (tenant.day_key, tenant.day_count)}
    booking = Booking(slots=[])
    while len(booking.slots) < limit and slot <= until:
        day, next_midnight = local_day(slot)
        key = day.isoformat()
        for scope in counts:
            if counts[scope][0] != key:
                counts[scope] = (key, 0)
        if (instance_cap and counts["instance"][1] >= instance_cap) or (
            tenant.daily_cap and counts["tenant"][1] >= tenant.daily_cap
        ):
            booking.capped_until = next_midnight
            break
        booking.slots.append(slot)
        counts = {scope: (k, n + 1) for scope, (k, n) in counts.items()}
        gap, sends_since_rest = pace.gap(sends_since_rest=sends_since_rest, rng=rng)
        slot += timedelta(seconds=gap)

    if booking.slots:
        Instance.update(
            next_slot_at=slot, sends_since_rest=sends_since_rest,
            day_key=counts["instance"][0], day_count=counts["instance"][1],
        ).where(Instance.id == instance_id).execute()
        Tenant.update(day_key=counts["tenant"][0], day_count=counts["tenant"][1]).where(Tenant.id == tenant_id).execute()
    return booking


def admit(instance_id: int, *, min_interval: float, now: datetime) -> float:
    """Let one message through the instance's floor: at least ``min_interval``
    seconds after the previous one, whatever the broker's timing (a delayed
    message delivered late must not bunch up with the next one).

    Returns:
      0 when admitted (the send may go now), else the seconds to wait.
    """
    floor = now - timedelta(seconds=min_interval)
    admitted = (
        Instance.update(last_send_at=now)
        .where((Instance.id == instance_id) & (Instance.last_send_at.is_null() | (Instance.last_send_at <= floor)))
        .execute()
    )
    if admitted:
        return 0.0
    last = Instance.select(Instance.last_send_at).where(Instance.id == instance_id).scalar()
    return max(0.001, (last - floor).total_seconds()) if last else 0.001


def tenant_rate(tenant_id: int) -> float:
    """Messages per minute the tenant's active, healthy instances send together
    on average (rests included)."""
    instances = Instance.select().where(
        (Instance.tenant == tenant_id) & (Instance.is_active == True) & (Instance.health != "down")  # noqa: E712
    )
    return sum(SECONDS_PER_MINUTE / Pace.of(i).mean_interval for i in instances)


def sending_seconds(tenant_id: int, contacts: int) -> float:
    """Seconds of open time the tenant needs to send ``contacts`` messages."""
    rate = tenant_rate(tenant_id)
    if contacts <= 0 or rate <= 0:
        return 0.0
    return contacts / rate * SECONDS_PER_MINUTE


def minutes(seconds: float) -> int:
    """Whole minutes, rounded up (at least 1 for any positive time)."""
    return max(1, math.ceil(seconds / SECONDS_PER_MINUTE)) if seconds > 0 else 0

