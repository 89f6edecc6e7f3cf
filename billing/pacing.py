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

from peewee import Case

from billing.adapters.db import locked
from billing.adapters.models import Contact, Instance, Tenant
from billing.domain.states import ContactStatus
from billing.instances import healthy_instances

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
    def of(cls, instance: Instance) -> Pace:
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
      slots: (time, instance id) pairs, ascending by time.
      capped_until: set when daily caps stopped the booking: the local midnight
        (naive UTC) after which sending may go on.
    """

    slots: list[tuple[datetime, int]]
    capped_until: datetime | None = None


@dataclass
class _Lane:
    """One instance's booking state while slots are handed out."""

    instance: Instance
    pace: Pace
    cap: int
    slot: datetime
    sends_since_rest: int
    day_key: str
    day_count: int


def book_slots(
    instance_ids: list[int], *, now: datetime, until: datetime, limit: int, local_day, rng: random.Random = _rng
) -> Booking:
    """Book up to ``limit`` send slots across a tenant's instances, none after ``until``.

    Each slot goes to the instance that is free first, so instances share the
    load at their own paces. Must run inside a write transaction: the booking
    is part of it, so a rolled-back dispatch gives its slots back. Locks the
    tenant row, then the instance rows by id (always in that order, so two
    dispatches cannot deadlock).

    Parameters:
      instance_ids: instances of one tenant that may send.
      now: the current time (naive UTC).
      until: the latest slot that may be booked.
      limit: how many slots are wanted at most.
      local_day: callable(naive UTC datetime) -> (date, next local midnight as
        naive UTC) in the tenant's zone, for the daily caps.
      rng: the randomness of gaps and rests (tests pass a seeded one).
    """
    if not instance_ids:
        return Booking(slots=[])
    tenant_id = Instance.select(Instance.tenant).where(Instance.id == instance_ids[0]).scalar()
    tenant = locked(Tenant.select().where(Tenant.id == tenant_id)).get()
    lanes = [
        _Lane(
            instance=i, pace=Pace.of(i),
            cap=daily_cap(cap=i.daily_cap, warmup_days=i.warmup_days, age_days=max(0, (now - i.created_at).days)),
            slot=max(now, i.next_slot_at or now), sends_since_rest=i.sends_since_rest,
            day_key=i.day_key, day_count=i.day_count,
        )
        for i in locked(Instance.select().where(Instance.id.in_(instance_ids)).order_by(Instance.id))
    ]
    tenant_day = (tenant.day_key, tenant.day_count)
    booking = Booking(slots=[])
    open_lanes = list(lanes)
    while len(booking.slots) < limit and open_lanes:
        lane = min(open_lanes, key=lambda candidate: candidate.slot)
        if lane.slot > until:
            break
        day, next_midnight = local_day(lane.slot)
        key = day.isoformat()
        if lane.day_key != key:
            lane.day_key, lane.day_count = key, 0
        if tenant_day[0] != key:
            tenant_day = (key, 0)
        if (lane.cap and lane.day_count >= lane.cap) or (tenant.daily_cap and tenant_day[1] >= tenant.daily_cap):
            booking.capped_until = min(booking.capped_until or next_midnight, next_midnight)
            open_lanes.remove(lane)
            continue
        booking.slots.append((lane.slot, lane.instance.id))
        lane.day_count += 1
        tenant_day = (key, tenant_day[1] + 1)
        gap, lane.sends_since_rest = lane.pace.gap(sends_since_rest=lane.sends_since_rest, rng=rng)
        lane.slot += timedelta(seconds=gap)

    if booking.capped_until and open_lanes:
        booking.capped_until = None  # another instance can still send today
    used = {instance_id for _, instance_id in booking.slots}
    for lane in lanes:
        if lane.instance.id in used:
            Instance.update(
                next_slot_at=lane.slot, sends_since_rest=lane.sends_since_rest, day_key=lane.day_key,
                day_count=lane.day_count,
            ).where(Instance.id == lane.instance.id).execute()
    if booking.slots:
        Tenant.update(day_key=tenant_day[0], day_count=tenant_day[1]).where(Tenant.id == tenant_id).execute()
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
    return sum(SECONDS_PER_MINUTE / Pace.of(i).mean_interval for i in healthy_instances(tenant_id=tenant_id))


def sending_seconds(tenant_id: int, contacts: int) -> float:
    """Seconds of open time the tenant needs to send ``contacts`` messages."""
    rate = tenant_rate(tenant_id)
    if contacts <= 0 or rate <= 0:
        return 0.0
    return contacts / rate * SECONDS_PER_MINUTE


def minutes(seconds: float) -> int:
    """Whole minutes, rounded up (at least 1 for any positive time)."""
    return max(1, math.ceil(seconds / SECONDS_PER_MINUTE)) if seconds > 0 else 0


def _day_keys(instance_ids) -> dict[int, tuple[str, object]]:
    """Each instance's tenant zone, as (instance id -> (zone name, local_day))."""
    from billing.windows import local_day  # windows reads the tenant's calendar

    rows = (
        Instance.select(Instance.id, Tenant.timezone)
        .join(Tenant, on=(Instance.tenant == Tenant.id))
        .where(Instance.id.in_(list(instance_ids)))
        .tuples()
    )
    return {instance_id: (zone, local_day(zone)) for instance_id, zone in rows}


def release_slots(slots: list[tuple[int, datetime]]) -> None:
    """Give booked, unsent slots back to today's daily caps and to the pace.

    A slot of a day that is over (or not yet the counted day) changes nothing
    to the caps: only today's reservations are counted in ``day_count``. Must
    run in the transaction that unbooked the contacts.

    Parameters:
      slots: (instance id, booked slot as naive UTC) of each slot given back.
    """
    if not slots:
        return
    zones = _day_keys({instance_id for instance_id, _ in slots})
    per_instance: dict[tuple[int, str], int] = {}
    for instance_id, slot in slots:
        if instance_id not in zones:
            continue
        day, _ = zones[instance_id][1](slot)
        key = (instance_id, day.isoformat())
        per_instance[key] = per_instance.get(key, 0) + 1
    tenants = dict(
        Instance.select(Instance.id, Instance.tenant).where(Instance.id.in_([i for i, _ in per_instance])).tuples()
    )
    # Tenant rows first, then instances: the order book_slots locks them in,
    # so a release and a booking cannot deadlock.
    list(locked(Tenant.select(Tenant.id).where(Tenant.id.in_(sorted(set(tenants.values())))).order_by(Tenant.id)))
    per_tenant: dict[tuple[int, str], int] = {}
    for (instance_id, day_key), count in sorted(per_instance.items()):
        Instance.update(day_count=Case(None, [(Instance.day_count > count, Instance.day_count - count)], 0)).where(
            (Instance.id == instance_id) & (Instance.day_key == day_key)
        ).execute()
        tenant_key = (tenants[instance_id], day_key)
        per_tenant[tenant_key] = per_tenant.get(tenant_key, 0) + count
    for (tenant_id, day_key), count in per_tenant.items():
        Tenant.update(day_count=Case(None, [(Tenant.day_count > count, Tenant.day_count - count)], 0)).where(
            (Tenant.id == tenant_id) & (Tenant.day_key == day_key)
        ).execute()
    _rewind(slots)


def _rewind(slots: list[tuple[int, datetime]]) -> None:
    """Give released slots back to the pace: when they were an instance's last
    bookings, its next booking starts at the first of them, not after them (a
    resumed queue, or a restarted embedded process, would otherwise wait out
    the horizon its released bookings had reserved). The floor
    (``last_send_at``) still spaces the next send from the last one.

    Parameters:
      slots: (instance id, booked slot as naive UTC) of each slot given back.
    """
    earliest: dict[int, datetime] = {}
    for instance_id, slot in slots:
        earliest[instance_id] = min(slot, earliest.get(instance_id, slot))
    for instance_id in sorted(earliest):
        first = earliest[instance_id]
        later = Contact.select(Contact.id).where(
            (Contact.instance == instance_id) & Contact.status.in_((ContactStatus.QUEUED, ContactStatus.SENDING))
            & (Contact.slot_at >= first)
        )
        if not later.exists():
            Instance.update(next_slot_at=first).where(
                (Instance.id == instance_id) & (Instance.next_slot_at > first)).execute()


def count_sent(instance_id: int, *, at: datetime) -> None:
    """One more message the gateway accepted on ``at``'s local day."""
    zones = _day_keys([instance_id])
    if instance_id not in zones:
        return
    day, _ = zones[instance_id][1](at)
    key = day.isoformat()
    Instance.update(
        sent_count=Case(None, [(Instance.sent_day == key, Instance.sent_count + 1)], 1), sent_day=key,
    ).where(Instance.id == instance_id).execute()


def sent_today(instance: Instance, *, now: datetime) -> int:
    """Messages the gateway accepted today (the instance's tenant zone)."""
    zones = _day_keys([instance.id])
    if instance.id not in zones:
        return 0
    day, _ = zones[instance.id][1](now)
    return instance.sent_count if instance.sent_day == day.isoformat() else 0
