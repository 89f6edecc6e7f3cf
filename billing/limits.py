"""Counters in the database, so a limit holds across every web process:
requests per API key per hour, contacts per tenant per day."""
from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from peewee import fn

from billing.adapters.db import locked, write_transaction
from billing.adapters.models import RateCounter
from billing.clock import utcnow
from billing.errors import BillingError

HOUR = timedelta(hours=1)


class RateLimited(BillingError):
    """A limit was reached.

    Parameters:
      message: what was limited.
      limit: the limit of the window.
      reset_at: when the window ends (naive UTC).
    """

    http_status = 429

    def __init__(self, message: str, *, limit: int, reset_at: datetime, now: datetime) -> None:
        super().__init__(message)
        self.limit = limit
        self.reset_at = reset_at
        self.retry_after = max(1, int((reset_at - now).total_seconds() + 0.999))


class Usage:
    """Where a counter stands after a request.

    Parameters:
      limit: the window's limit.
      remaining: what is left of it.
      reset_at: when the window ends (naive UTC).
    """

    __slots__ = ("limit", "remaining", "reset_at")

    def __init__(self, *, limit: int, remaining: int, reset_at: datetime) -> None:
        self.limit, self.remaining, self.reset_at = limit, remaining, reset_at


def hour_window(now: datetime) -> tuple[datetime, datetime]:
    start = now.replace(minute=0, second=0, microsecond=0)
    return start, start + HOUR


def day_window(tz_name: str, now: datetime) -> tuple[datetime, datetime]:
    """The local day containing ``now`` in ``tz_name``, as naive-UTC bounds."""
    zone = ZoneInfo(tz_name)
    local = now.replace(tzinfo=UTC).astimezone(zone)
    start = datetime.combine(local.date(), time(0), tzinfo=zone)
    end = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=zone)
    return (start.astimezone(UTC).replace(tzinfo=None), end.astimezone(UTC).replace(tzinfo=None))


def consume(key: str, *, amount: int = 1, limit: int, window: tuple[datetime, datetime],
            now: datetime | None = None, what: str = "requests") -> Usage:
    """Count ``amount`` against ``key`` in ``window`` unless that would pass ``limit``.

    One upsert under a row lock: two processes counting at once both see the
    other's count, so the limit holds exactly.

    Parameters:
      key: what is counted (e.g. ``apikey:12``).
      amount: how much this use counts.
      limit: the most the window allows.
      window: (start, end) of the current window, naive UTC.
      what: the limited thing, for the error message.

    Raises:
      RateLimited: nothing was counted.
    """
    now = now or utcnow()
    start, end = window
    with write_transaction():
        RateCounter.insert(key=key, window_start=start, count=0).on_conflict_ignore().execute()
        row = locked(RateCounter.select().where((RateCounter.key == key) & (RateCounter.window_start == start))).get()
        if row.count + amount > limit:
            raise RateLimited(f"{what} limit reached ({limit} per window); retry after {end:%Y-%m-%d %H:%M} UTC",
                              limit=limit, reset_at=end, now=now)
        RateCounter.update(count=RateCounter.count + amount).where(RateCounter.id == row.id).execute()
    return Usage(limit=limit, remaining=limit - row.count - amount, reset_at=end)


def usage(key: str, *, since: datetime) -> int:
    """How much ``key`` counted in windows starting at or after ``since``."""
    return RateCounter.select(fn.COALESCE(fn.SUM(RateCounter.count), 0)).where(
        (RateCounter.key == key) & (RateCounter.window_start >= since)
    ).scalar()
