"""Counters in the database, so a limit holds across every web process:
requests per API key per hour, contacts per tenant per day, failed
authentications per client address per five minutes."""
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


#: The window failed authentications (a wrong API key, admin token, webhook
#: secret or signature) are counted in per client address, fixed windows from
#: the hour. Past the limit (Settings.failed_auth_limit, 20 by default), every
#: authentication from that address answers 429 until the window ends, a
#: correct credential included (a guesser cannot tell a hit).
FAILED_AUTH_WINDOW = timedelta(minutes=5)
#: Counter keys stay within RateCounter.key's column.
MAX_ADDRESS_LENGTH = 100


def failure_window(now: datetime) -> tuple[datetime, datetime]:
    """The FAILED_AUTH_WINDOW containing ``now`` (naive UTC bounds)."""
    step = int(FAILED_AUTH_WINDOW.total_seconds())
    hour = now.replace(minute=0, second=0, microsecond=0)
    start = hour + timedelta(seconds=(int((now - hour).total_seconds()) // step) * step)
    return start, start + FAILED_AUTH_WINDOW


def _failure_key(address: str) -> str:
    return f"authfail:{address[:MAX_ADDRESS_LENGTH]}"


def check_failed_auth(address: str, *, limit: int, now: datetime | None = None) -> None:
    """Refuse an authentication from ``address`` while it is blocked.

    Parameters:
      address: the client's address (web.auth.client_ip).
      limit: failed authentications allowed per window; 0: no limit.
      now: the time (default: now).

    Raises:
      RateLimited: the address failed ``limit`` times in this window;
        ``retry_after`` says when the window ends.
    """
    if limit <= 0:
        return
    now = now or utcnow()
    start, end = failure_window(now)
    failures = RateCounter.select(RateCounter.count).where(
        (RateCounter.key == _failure_key(address)) & (RateCounter.window_start == start)
    ).scalar() or 0
    if failures >= limit:
        raise RateLimited(f"too many failed authentications from this address; retry after {end:%H:%M:%S} UTC",
                          limit=limit, reset_at=end, now=now)


def record_failed_auth(address: str, *, now: datetime | None = None) -> None:
    """Count one failed authentication from ``address`` (shared by every web process).

    Parameters:
      address: the client's address.
      now: the time (default: now).
    """
    start, _ = failure_window(now or utcnow())
    key = _failure_key(address)
    with write_transaction():
        RateCounter.insert(key=key, window_start=start, count=0).on_conflict_ignore().execute()
        RateCounter.update(count=RateCounter.count + 1).where(
            (RateCounter.key == key) & (RateCounter.window_start == start)
        ).execute()
