"""When a queue may send: the tenant's calendar, applied by message type.

A message type declared ``hours_bound`` (the charges: overdue, upcoming) goes
out only inside the tenant's business hours and never on holidays; the others
(notifications) go out at any time.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from billing.adapters.models import Tenant
from billing.domain import message_types
from billing.domain.hours import Calendar, parse_holidays, parse_hours

#: pause_reason while a queue waits for its window.
OUTSIDE_HOURS_REASON = "Fora do horário comercial"


#: Calendars kept built (each caches its days), one per distinct setting.
CALENDAR_CACHE_SIZE = 256


@functools.lru_cache(maxsize=CALENDAR_CACHE_SIZE)
def _calendar(hours: str, timezone_name: str, holidays: str, extra: tuple[str, ...]) -> Calendar:
    country, subdivision = parse_holidays(holidays)
    return Calendar(
        hours=parse_hours(hours),
        timezone=timezone_name,
        holiday_country=country,
        subdivision=subdivision,
        extra_holidays=frozenset(date.fromisoformat(d) for d in extra),
    )


def calendar_for(tenant: Tenant) -> Calendar:
    """The tenant's business calendar (hours, zone, holidays)."""
    return _calendar(tenant.business_hours, tenant.timezone, tenant.holidays, tuple(tenant.extra_holidays or ()))


@dataclass(frozen=True)
class Window:
    """Whether a queue may send now, and until when.

    Parameters:
      open: sending is allowed now.
      until: the end of the current window (None: no end, e.g. notifications).
      next_open: when a closed window opens again (None when open, or never).
    """

    open: bool
    until: datetime | None = None
    next_open: datetime | None = None


ALWAYS = Window(open=True)


def hours_bound(template_type: str) -> bool:
    """Whether business hours and holidays bind messages of ``template_type``.

    A type no longer declared (its campaigns outlived it) keeps the stricter
    rule: a message that cannot be classified is not sent at night.

    Parameters:
      template_type: a message type's name.
    """
    declared = message_types.MESSAGE_TYPES.get(template_type)
    return declared is None or declared.hours_bound


def window_for(tenant: Tenant, template_type: str, *, now: datetime) -> Window:
    if not hours_bound(template_type):
        return ALWAYS
    calendar = calendar_for(tenant)
    if calendar.is_open(now):
        return Window(open=True, until=calendar.current_window_end(now))
    return Window(open=False, next_open=calendar.next_open(now))


def local_day(tz_name: str):
    """A function giving, for a naive-UTC time, its local date in ``tz_name``
    and the next local midnight as naive UTC (for daily caps)."""
    zone = ZoneInfo(tz_name)

    def day_of(at_utc: datetime) -> tuple[date, datetime]:
        local = at_utc.replace(tzinfo=UTC).astimezone(zone)
        midnight = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=zone)
        return local.date(), midnight.astimezone(UTC).replace(tzinfo=None)

    return day_of


def finish_time(tenant: Tenant, template_type: str, *, seconds: float, now: datetime) -> datetime | None:
    """When ``seconds`` of sending, started now, end once closed hours are skipped."""
    if not hours_bound(template_type):
        return now + timedelta(seconds=seconds)
    return calendar_for(tenant).time_after_open_seconds(now, seconds)
