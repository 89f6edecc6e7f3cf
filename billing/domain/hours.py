"""Business hours and holidays: when a tenant may send billing reminders.

Billing reminders (overdue, upcoming) go out only inside the tenant's weekly
business hours, in the tenant's time zone, and never on a holiday. Whether a
message is a reminder (restricted) or a notification (24/7) is the caller's
decision; this module only answers questions about time:

* :func:`parse_hours` reads the hours a tenant types
  (``"mon-fri 08:00-18:00, sat 08:00-12:00"``) into :class:`WeeklyHours`;
* :func:`parse_holidays` reads the holiday setting (``"BR"``, ``"BR-SP"``,
  ``"none"``);
* :class:`Calendar` combines both with an IANA time zone and answers
  "open now?", "when does it open?", "when does this window close?" and "when
  will N seconds of sending be done?";
* :func:`phone_timezone` and :func:`calendar_for_recipient` move a calendar to
  the recipient's time zone, since Brazil spans four UTC offsets.

Storage keeps naive UTC datetimes, so every argument and result here is a
naive UTC datetime (aware ones are accepted and converted); local time exists
only inside this module. Local wall times map to instants as follows: a time
that does not exist (spring-forward gap) becomes the first instant after the
gap, and a time that happens twice (fall-back) is its first occurrence.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
import phonenumbers
from phonenumbers import NumberParseException
from phonenumbers import timezone as phone_timezones

from billing.domain.phones import BRAZIL_COUNTRY_CODE, DDD_LENGTH

#: The text meaning "open every hour of every day" (holidays still close).
ALWAYS = "always"
#: What :meth:`WeeklyHours.describe` says of hours with no window at all.
NEVER = "never"

#: Canonical day names, index = ``date.weekday()`` (0 is Monday).
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Every accepted day name (English and Portuguese, lower case, accents as
#: typed or not) to its weekday number.
DAY_ALIASES: dict[str, int] = {
    **{name: number for number, name in enumerate(DAY_NAMES)},
    "seg": 0,
    "ter": 1,
    "qua": 2,
    "qui": 3,
    "sex": 4,
    "sab": 5,
    "sáb": 5,
    "dom": 6,
}

#: ``datetime.time`` cannot hold 24:00, so a window ending at midnight at the
#: end of its day stores this as its end; it is read as the next midnight.
END_OF_DAY = time.max
#: How 24:00 is written, in input and in :meth:`WeeklyHours.describe`.
END_OF_DAY_TEXT = "24:00"

#: How many days ahead :meth:`Calendar.next_open` and the other searches look
#: for an open window before concluding there is none.
NEXT_OPEN_SEARCH_DAYS = 366

#: Holiday country setting meaning "no national holidays".
NO_HOLIDAYS = "none"
#: Language of holiday names, when the country's holidays are translated to it.
#: Always passed explicitly: left unset, the ``holidays`` package picks the
#: language from the process locale, so names would change with ``LANG``.
HOLIDAY_LANGUAGE = "pt_BR"
#: Name :meth:`Calendar.is_holiday` gives a tenant's own closed date.
EXTRA_HOLIDAY_NAME = "tenant holiday"

#: (country, subdivision, year) holiday tables kept in memory; a process
#: serves few countries and years, so this bounds memory without evictions.
HOLIDAY_CACHE_SIZE = 256
#: Local days whose open intervals one :class:`Calendar` keeps; the cache is
#: emptied when full (a sweep of the whole search horizon still fits).
DAY_CACHE_SIZE = 1024
#: Calendars in other time zones one :class:`Calendar` keeps for
#: :func:`calendar_for_recipient` (Brazil has 16 zones).
ZONE_VARIANT_CACHE_SIZE = 64

#: IANA zone of each Brazilian area code (DDD), grouped by zone.
#:
#: Source: Anatel's DDD plan (which state each DDD serves, the same list as
#: :data:`billing.domain.phones.BRAZIL_AREA_CODES`) joined with tzdata's
#: ``zone1970.tab``, which names the zone of each state. ``phonenumbers``'
#: own time-zone data is not used for Brazil because it is wrong for several
#: DDDs (it puts 81 Recife in America/Noronha, UTC-2, and 93/94 Pará in
#: America/Manaus, UTC-4).
#:
#: Choices where a DDD spans zones:
#:
#: * 81: Pernambuco coast including the Fernando de Noronha islands (UTC-2);
#:   the islands have a few thousand people, so 81 is America/Recife.
#: * 97: interior of Amazonas; the westernmost municipalities (Eirunepé and
#:   its neighbours, America/Eirunepe) are UTC-5, the rest UTC-4, so 97 is
#:   America/Manaus, like the rest of the state.
#: * 93: western Pará, which tzdata gives its own zone, America/Santarem
#:   (UTC-3 like Belém since 2008).
#: * 61: the Federal District and its Goiás surroundings, all UTC-3.
_ZONE_DDDS = {
    # SP, RJ, ES, MG, PR, SC, RS, DF, GO: tzdata's "Brazil (southeast)".
    "America/Sao_Paulo": (
        "11 12 13 14 15 16 17 18 19"  # São Paulo
        " 21 22 24"  # Rio de Janeiro
        " 27 28"  # Espírito Santo
        " 31 32 33 34 35 37 38"  # Minas Gerais
        " 41 42 43 44 45 46"  # Paraná
        " 47 48 49"  # Santa Catarina
        " 51 53 54 55"  # Rio Grande do Sul
        " 61"  # Distrito Federal
        " 62 64"  # Goiás
    ),
    "America/Araguaina": "63",  # Tocantins
    "America/Cuiaba": "65 66",  # Mato Grosso
    "America/Campo_Grande": "67",  # Mato Grosso do Sul
    "America/Rio_Branco": "68",  # Acre
    "America/Porto_Velho": "69",  # Rondônia
    "America/Bahia": "71 73 74 75 77",  # Bahia
    "America/Maceio": "79 82",  # Sergipe, Alagoas
    "America/Recife": "81 87",  # Pernambuco
    "America/Fortaleza": (
        "83"  # Paraíba
        " 84"  # Rio Grande do Norte
        " 85 88"  # Ceará
        " 86 89"  # Piauí
        " 98 99"  # Maranhão
    ),
    "America/Belem": "91 94 96",  # Pará (east), Amapá
    "America/Santarem": "93",  # Pará (west)
    "America/Manaus": "92 97",  # Amazonas
    "America/Boa_Vista": "95",  # Roraima
}
#: Brazilian DDD to IANA zone name; see ``_ZONE_DDDS`` for source and choices.
BRAZIL_DDD_TIMEZONES: dict[str, str] = {
    ddd: zone for zone, ddds in _ZONE_DDDS.items() for ddd in ddds.split()
}
#: What ``phonenumbers`` answers for a number it cannot place.
UNKNOWN_PHONE_TIMEZONE = "Etc/Unknown"

_UTC = UTC
_ONE_DAY = timedelta(days=1)
_MIDNIGHT = time()
_BRAZIL_PREFIX = "+" + BRAZIL_COUNTRY_CODE

# People type en dashes (copied from documents) and spaces around dashes.
_DASH = re.compile(r"\s*[-\u2013]\s*")
_TIME = re.compile(r"(\d{1,2}):(\d{2})", re.ASCII)


class InvalidSchedule(ValueError):
    """Hours, holidays or a time zone that cannot be used; ``str(exc)`` says why."""


# A window as offsets from local midnight: (start, end), end exclusive.
_Span = tuple[timedelta, timedelta]


@dataclass(frozen=True)
class WeeklyHours:
    """The hours of a week during which reminders may be sent.

    Parameters:
      windows: ``(weekday, start, end)`` triples in local wall time, weekday 0
        being Monday, ``end`` exclusive and :data:`END_OF_DAY` for 24:00.
        Times are whole minutes. Stored sorted; windows of one day must not
        overlap (touching is fine: ``08:00-12:00`` and ``12:00-18:00``).
      always: open every hour of every day; ``windows`` must then be empty.

    Raises:
      InvalidSchedule: for a window that breaks these rules.
    """

    windows: tuple[tuple[int, time, time], ...] = ()
    always: bool = False
    # Per weekday, the windows as offsets from midnight: what Calendar reads.
    _spans: tuple[tuple[_Span, ...], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.always and self.windows:
            raise InvalidSchedule(f"{ALWAYS!r} takes no windows")
        for window in self.windows:
            if not isinstance(window, tuple) or len(window) != 3:
                raise InvalidSchedule(f"a window must be (weekday, start, end), got {window!r}")
            weekday, start, end = window
            label = f"{_day_name(weekday)} {_format_time(start)}-{_format_time(end)}"
            _check_window_times(start, end, label=label)
        windows = tuple(sorted(self.windows, key=lambda w: (w[0], _offset(w[1]), _offset(w[2]))))

        spans: list[list[_Span]] = [[] for _ in DAY_NAMES]
        for weekday, start, end in windows:
            label = f"{DAY_NAMES[weekday]} {_format_time(start)}-{_format_time(end)}"
            span = (_offset(start), _offset(end))
            day_spans = spans[weekday]
            # Sorted by start, so only the previous window can overlap.
            if day_spans and span[0] < day_spans[-1][1]:
                raise InvalidSchedule(f"overlapping windows on {label}")
            day_spans.append(span)

        if self.always:
            spans = [[(timedelta(0), _ONE_DAY)] for _ in DAY_NAMES]
        object.__setattr__(self, "windows", windows)
        object.__setattr__(self, "_spans", tuple(tuple(day) for day in spans))

    def describe(self) -> str:
        """Return the hours in canonical text, which :func:`parse_hours` reads back.

        Days with the same windows are joined into ranges (``mon-fri``), a
        range may wrap past Sunday (``fri-mon``), items are ordered by their
        first day from Monday, names are English and times ``HH:MM``.

        Returns:
          e.g. ``"mon-fri 08:00-18:00, sat 08:00-12:00"``, ``"always"``, or
          ``"never"`` when there is no window.
        """
        if self.always:
            return ALWAYS
        if not self.windows:
            return NEVER

        by_day = [
            " ".join(f"{_format_time(start)}-{_format_time(end)}" for start, end in times)
            for times in self._day_times()
        ]
        days = len(DAY_NAMES)
        # Start the runs at a day that differs from the day before it, so a
        # run is never cut at the Sunday/Monday boundary; if none differs,
        # every day has the same windows.
        first = next((day for day in range(days) if by_day[day] != by_day[day - 1]), None)
        if first is None:
            return f"{DAY_NAMES[0]}-{DAY_NAMES[-1]} {by_day[0]}"

        runs: list[tuple[int, int]] = []  # (first day, length)
        for step in range(days):
            day = (first + step) % days
            if runs and by_day[day] == by_day[(runs[-1][0] + runs[-1][1] - 1) % days]:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((day, 1))

        items = []
        for start_day, length in sorted(runs):
            if not by_day[start_day]:
                continue
            days_text = DAY_NAMES[start_day]
            if length > 1:
                days_text += "-" + DAY_NAMES[(start_day + length - 1) % days]
            items.append(f"{days_text} {by_day[start_day]}")
        return ", ".join(items)

    def _day_times(self) -> list[list[tuple[time, time]]]:
        per_day: list[list[tuple[time, time]]] = [[] for _ in DAY_NAMES]
        for weekday, start, end in self.windows:
            per_day[weekday].append((start, end))
        return per_day


def parse_hours(text: str) -> WeeklyHours:
    """Read business hours as a tenant writes them.

    Grammar, case-insensitive, spaces free around items, dashes and times:
    ``always``, or comma-separated items ``DAYS HH:MM-HH:MM [HH:MM-HH:MM ...]``
    where DAYS is one day or a range ``mon-fri`` (ranges may wrap past Sunday:
    ``fri-mon``). Days are ``mon tue wed thu fri sat sun`` or Portuguese
    ``seg ter qua qui sex sab/sáb dom``. ``24:00`` may end a window. ``never``
    (no window at all) is accepted so that every :meth:`WeeklyHours.describe`
    output reads back.

    Parameters:
      text: the hours, e.g. ``"mon-fri 08:00-12:00 13:00-18:00, sáb 08:00-12:00"``.

    Returns:
      The parsed hours.

    Raises:
      InvalidSchedule: naming the offending item, for an empty text or item,
        an unknown day, a malformed time, a window whose start is not before
        its end, or windows overlapping on the same day.
    """
    if not isinstance(text, str):
        raise InvalidSchedule("hours must be text")
    normalized = unicodedata.normalize("NFC", text).strip().lower()
    if not normalized:
        raise InvalidSchedule("hours are empty")
    if normalized == ALWAYS:
        return WeeklyHours(always=True)
    if normalized == NEVER:
        return WeeklyHours()

    spans: list[list[tuple[time, time, str]]] = [[] for _ in DAY_NAMES]
    for raw_item in normalized.split(","):
        item = " ".join(raw_item.split())
        if not item:
            raise InvalidSchedule("empty item in hours (stray comma?)")
        if item in (ALWAYS, NEVER):
            raise InvalidSchedule(f"{item!r} cannot be combined with other items")
        weekdays, times = _parse_item(item)
        for weekday in weekdays:
            for start, end in times:
                _add_window(spans[weekday], start, end, item=item, weekday=weekday)

    windows = tuple(
        (weekday, start, end)
        for weekday, day_spans in enumerate(spans)
        for start, end, _ in day_spans
    )
    return WeeklyHours(windows=windows)


def parse_holidays(text: str) -> tuple[str | None, str | None]:
    """Read the holiday setting: a country, optionally with a subdivision.

    Parameters:
      text: ``"BR"``, ``"BR-SP"`` (country and state, as the ``holidays``
        package names them), or ``"none"`` for no national holidays;
        case-insensitive.

    Returns:
      ``(country, subdivision)``: ``("BR", None)``, ``("BR", "SP")`` or
      ``(None, None)``.

    Raises:
      InvalidSchedule: for an empty text, or a country or subdivision the
        ``holidays`` package does not know.
    """
    if not isinstance(text, str):
        raise InvalidSchedule("holidays must be text")
    cleaned = text.strip()
    if not cleaned:
        raise InvalidSchedule(
            f"holidays are empty; use a country code such as 'BR' or {NO_HOLIDAYS!r}"
        )
    if cleaned.lower() == NO_HOLIDAYS:
        return None, None

    country, _, subdivision = cleaned.partition("-")
    country = _canonical_country(country.strip())
    if not subdivision.strip():
        if subdivision or cleaned.endswith("-"):
            raise InvalidSchedule(f"missing subdivision in holidays {cleaned!r}")
        return country, None
    return country, _canonical_subdivision(country, subdivision.strip())


@dataclass(frozen=True)
class Calendar:
    """When a tenant may send reminders: weekly hours in a zone, minus holidays.

    All datetimes taken and returned are naive UTC (aware ones are converted).

    Parameters:
      hours: the weekly business hours, in local wall time.
      timezone: IANA zone the hours are in, e.g. ``"America/Sao_Paulo"``.
      holiday_country: ISO country whose national holidays close the
        calendar (``holidays`` package codes, any case); ``None`` or
        ``"none"`` for no national holidays.
      extra_holidays: the tenant's own closed dates (local dates).
      subdivision: state or province whose holidays are added, e.g. ``"SP"``.

    Raises:
      InvalidSchedule: for an unknown time zone, country or subdivision, or a
        subdivision without a country.
    """

    hours: WeeklyHours
    timezone: str
    holiday_country: str | None = "BR"
    extra_holidays: frozenset[date] = frozenset()
    subdivision: str | None = None
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    # Local date -> open intervals as naive UTC (start, end) pairs, sorted.
    _days: dict[date, tuple[tuple[datetime, datetime], ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # UTC date -> the open intervals overlapping it (from up to three local
    # days), so is_open needs no time-zone conversion.
    _utc_days: dict[date, tuple[tuple[datetime, datetime], ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # Zone name -> this calendar in that zone (calendar_for_recipient), so
    # each zone's day cache survives between dispatches.
    _variants: dict[str, Calendar] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not isinstance(self.hours, WeeklyHours):
            raise InvalidSchedule("hours must be WeeklyHours (see parse_hours)")
        object.__setattr__(self, "_zone", _zone_info(self.timezone))

        country = self.holiday_country
        if country is not None and country.strip().lower() == NO_HOLIDAYS:
            country = None
        if country is not None:
            country = _canonical_country(country.strip())
        subdivision = self.subdivision
        if subdivision is not None:
            if country is None:
                raise InvalidSchedule("holiday subdivision needs a holiday country")
            subdivision = _canonical_subdivision(country, subdivision.strip())
        object.__setattr__(self, "holiday_country", country)
        object.__setattr__(self, "subdivision", subdivision)

        extra = frozenset(self.extra_holidays)
        # A datetime is a date subclass but never equals one: it would never match.
        if any(type(day) is not date for day in extra):
            raise InvalidSchedule("extra holidays must be dates")
        object.__setattr__(self, "extra_holidays", extra)

    def is_open(self, at_utc: datetime) -> bool:
        """Return whether reminders may be sent at ``at_utc``.

        Parameters:
          at_utc: the moment, naive UTC.

        Returns:
          True inside a window on a day that is not a holiday.
        """
        if at_utc.tzinfo is not None:
            at_utc = _naive_utc(at_utc)
        for start, end in self._utc_day_intervals(at_utc.date()):
            if at_utc < start:
                return False
            if at_utc < end:
                return True
        return False

    def next_open(self, at_utc: datetime) -> datetime | None:
        """Return the first moment at or after ``at_utc`` when the calendar is open.

        Parameters:
          at_utc: where to start looking, naive UTC.

        Returns:
          ``at_utc`` itself if open then, else the start of the next window,
          naive UTC; None if nothing opens within
          :data:`NEXT_OPEN_SEARCH_DAYS` days (e.g. hours with no window).
        """
        at_utc = _naive_utc(at_utc)
        # Fast path: the intervals around this UTC day are cached together.
        for start, end in self._utc_day_intervals(at_utc.date()):
            if end > at_utc:
                return max(start, at_utc)
        for start, _ in self._intervals_from(at_utc):
            return max(start, at_utc)
        return None

    def current_window_end(self, at_utc: datetime) -> datetime | None:
        """Return when the open period containing ``at_utc`` closes.

        Windows that touch (``08:00-12:00 12:00-18:00``, or ``22:00-24:00``
        followed by ``00:00-06:00`` the next day) are one open period, so this
        is when sending must actually stop.

        Parameters:
          at_utc: the moment, naive UTC.

        Returns:
          The end of the open period, naive UTC; None if closed at
          ``at_utc``. A calendar that stays open for
          :data:`NEXT_OPEN_SEARCH_DAYS` days (``always`` without holidays)
          returns the end of that horizon: open at least until then.
        """
        at_utc = _naive_utc(at_utc)
        horizon = at_utc + timedelta(days=NEXT_OPEN_SEARCH_DAYS)
        end: datetime | None = None
        for start, stop in self._intervals_from(at_utc):
            if end is None:
                if start > at_utc:
                    return None
            elif start != end:
                break
            end = stop
            if end >= horizon:
                return horizon
        return end

    def is_holiday(self, day: date) -> str | None:
        """Return the name of the holiday on ``day``, or None if it is not one.

        Parameters:
          day: a local date in the calendar's zone.

        Returns:
          The national (or subdivision) holiday's name, in
          :data:`HOLIDAY_LANGUAGE` when available; :data:`EXTRA_HOLIDAY_NAME`
          for a tenant's own closed date; None otherwise.
        """
        if self.holiday_country is not None:
            name = _holiday_names(self.holiday_country, self.subdivision, day.year).get(day)
            if name is not None:
                return name
        if day in self.extra_holidays:
            return EXTRA_HOLIDAY_NAME
        return None

    def open_seconds_between(self, start_utc: datetime, end_utc: datetime) -> float:
        """Return how many seconds the calendar is open between two moments.

        Parameters:
          start_utc: start of the interval, naive UTC, included.
          end_utc: end of the interval, naive UTC, excluded.

        Returns:
          The open time in seconds; 0.0 if ``end_utc`` is not after ``start_utc``.
        """
        start_utc = _naive_utc(start_utc)
        end_utc = _naive_utc(end_utc)
        if end_utc <= start_utc:
            return 0.0
        last_day = end_utc.replace(tzinfo=_UTC).astimezone(self._zone).date()
        total = timedelta(0)
        for start, end in self._intervals_from(start_utc, last_day=last_day):
            if start >= end_utc:
                break
            total += min(end, end_utc) - max(start, start_utc)
        return total.total_seconds()

    def time_after_open_seconds(self, start_utc: datetime, seconds: float) -> datetime | None:
        """Return when ``seconds`` of open time will have passed since ``start_utc``.

        This is the ETA of a queue that needs ``seconds`` of sending: the
        earliest moment ``m`` with ``open_seconds_between(start_utc, m) ==
        seconds``. Work that ends exactly as a window closes ends at the
        close, not at the next opening.

        Parameters:
          start_utc: when the work starts, naive UTC.
          seconds: open time the work needs.

        Returns:
          The moment, naive UTC (``start_utc`` for 0 seconds); None if the
          calendar stops opening (no window within :data:`NEXT_OPEN_SEARCH_DAYS`
          days) before the work is done.

        Raises:
          ValueError: if ``seconds`` is negative.
        """
        start_utc = _naive_utc(start_utc)
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        if seconds == 0:
            return start_utc
        remaining = timedelta(seconds=seconds)
        for start, end in self._intervals_from(start_utc):
            start = max(start, start_utc)
            if remaining <= end - start:
                return start + remaining
            remaining -= end - start
        return None

    def _intervals_from(
        self, at_utc: datetime, *, last_day: date | None = None
    ) -> Iterator[tuple[datetime, datetime]]:
        """Yield the open intervals that end after ``at_utc``, in order.

        Parameters:
          at_utc: naive UTC.
          last_day: the last local day to look at; without it the search goes
            on while some window opens within :data:`NEXT_OPEN_SEARCH_DAYS`
            days of the last one.
        """
        day = at_utc.replace(tzinfo=_UTC).astimezone(self._zone).date()
        closed_days = 0
        while closed_days < NEXT_OPEN_SEARCH_DAYS or last_day is not None:
            if last_day is not None and day > last_day:
                return
            found = False
            for start, end in self._intervals(day):
                if end > at_utc:
                    found = True
                    yield start, end
            closed_days = 0 if found else closed_days + 1
            if day == date.max:
                return
            day += _ONE_DAY

    def _utc_day_intervals(self, utc_day: date) -> tuple[tuple[datetime, datetime], ...]:
        """Return the open intervals that overlap the UTC day ``utc_day``, in order.

        Parameters:
          utc_day: a date in UTC.
        """
        cached = self._utc_days.get(utc_day)
        if cached is not None:
            return cached

        day_start = datetime.combine(utc_day, _MIDNIGHT)
        day_end = day_start + _ONE_DAY
        # UTC offsets stay within a day, so only the local days before, on
        # and after the UTC day can reach into it.
        intervals = tuple(
            (start, end)
            for local_day in _neighbour_days(utc_day)
            for start, end in self._intervals(local_day)
            if end > day_start and start < day_end
        )
        if len(self._utc_days) >= DAY_CACHE_SIZE:
            self._utc_days.clear()
        self._utc_days[utc_day] = intervals
        return intervals

    def _intervals(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        """Return the open intervals of the local ``day`` as naive UTC pairs.

        Parameters:
          day: a local date in the calendar's zone.
        """
        cached = self._days.get(day)
        if cached is not None:
            return cached

        intervals: tuple[tuple[datetime, datetime], ...] = ()
        if self.is_holiday(day) is None:
            midnight = datetime.combine(day, _MIDNIGHT)
            pairs = []
            for start, end in self.hours._spans[day.weekday()]:
                start_utc = _local_to_utc(midnight + start, self._zone)
                end_utc = _local_to_utc(midnight + end, self._zone)
                # A window lying wholly in a spring-forward gap has no instants.
                if start_utc < end_utc:
                    pairs.append((start_utc, end_utc))
            intervals = tuple(pairs)

        if len(self._days) >= DAY_CACHE_SIZE:
            self._days.clear()
        self._days[day] = intervals
        return intervals


def phone_timezone(e164: str, *, default: str) -> str:
    """Return the IANA time zone of the phone number ``e164``.

    Brazilian numbers are placed by their DDD (:data:`BRAZIL_DDD_TIMEZONES`).
    Other numbers use ``phonenumbers``' time-zone data when it names exactly
    one zone (``+1 212`` is New York; ``+44`` names four, so it is not used).

    Parameters:
      e164: the number in E.164 form, e.g. ``"+5592988887777"``.
      default: the zone to return when the number cannot be placed, usually
        the tenant's.

    Returns:
      An IANA zone name.
    """
    if not isinstance(e164, str):
        return default
    if e164.startswith(_BRAZIL_PREFIX):
        ddd = e164[len(_BRAZIL_PREFIX):len(_BRAZIL_PREFIX) + DDD_LENGTH]
        return BRAZIL_DDD_TIMEZONES.get(ddd, default)

    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException:
        return default
    zones = phone_timezones.time_zones_for_number(number)
    if len(zones) != 1 or zones[0] == UNKNOWN_PHONE_TIMEZONE or not _zone_exists(zones[0]):
        return default
    return zones[0]


def calendar_for_recipient(calendar: Calendar, e164: str) -> Calendar:
    """Return ``calendar`` moved to the time zone of the phone number ``e164``.

    The hours stay the tenant's, read in the recipient's local time, and the
    holidays stay the tenant's (its business is what closes). The result is
    ``calendar`` itself when the zone does not change, and is kept for reuse
    otherwise, so repeated calls keep their caches warm.

    Parameters:
      calendar: the tenant's calendar.
      e164: the recipient's number in E.164 form.

    Returns:
      A calendar in the recipient's zone (the tenant's zone if unknown).
    """
    zone = phone_timezone(e164, default=calendar.timezone)
    if zone == calendar.timezone:
        return calendar
    variant = calendar._variants.get(zone)
    if variant is None:
        if len(calendar._variants) >= ZONE_VARIANT_CACHE_SIZE:
            calendar._variants.clear()
        variant = replace(calendar, timezone=zone)
        calendar._variants[zone] = variant
    return variant


def _parse_item(item: str) -> tuple[list[int], list[tuple[time, time]]]:
    """Split one item into its weekdays and its (start, end) times.

    Parameters:
      item: one comma-separated item, lower case, spaces collapsed.
    """
    tokens = _DASH.sub("-", item).split(" ")
    days_token, range_tokens = tokens[0], tokens[1:]
    if not range_tokens:
        raise InvalidSchedule(f"no time range in {item!r}, expected DAYS HH:MM-HH:MM")

    first, dash, last = days_token.partition("-")
    first_day = _parse_day(first, item=item)
    last_day = _parse_day(last, item=item) if dash else first_day
    # A range wraps past Sunday when its last day comes before its first.
    span = (last_day - first_day) % len(DAY_NAMES)
    weekdays = [(first_day + step) % len(DAY_NAMES) for step in range(span + 1)]

    times = []
    for token in range_tokens:
        start_text, dash, end_text = token.partition("-")
        if not dash or "-" in end_text:
            raise InvalidSchedule(
                f"invalid time range {token!r} in {item!r}, expected HH:MM-HH:MM"
            )
        start = _parse_time(start_text, item=item, is_end=False)
        end = _parse_time(end_text, item=item, is_end=True)
        if _offset(start) >= _offset(end):
            raise InvalidSchedule(f"start {start_text} is not before end {end_text} in {item!r}")
        times.append((start, end))
    return weekdays, times


def _parse_day(text: str, *, item: str) -> int:
    weekday = DAY_ALIASES.get(text)
    if weekday is None:
        raise InvalidSchedule(f"unknown day {text!r} in {item!r}")
    return weekday


def _parse_time(text: str, *, item: str, is_end: bool) -> time:
    """Read ``HH:MM`` (one-digit hours allowed); ``24:00`` only as an end.

    Parameters:
      text: the time as typed.
      item: the item it is in, for error messages.
      is_end: whether it ends a window.
    """
    match = _TIME.fullmatch(text)
    if not match:
        raise InvalidSchedule(f"invalid time {text!r} in {item!r}, expected HH:MM")
    hour, minute = int(match.group(1)), int(match.group(2))
    if (hour, minute) == (24, 0):
        if not is_end:
            raise InvalidSchedule(f"{END_OF_DAY_TEXT} can only end a window, in {item!r}")
        return END_OF_DAY
    if hour > 23 or minute > 59:
        raise InvalidSchedule(f"invalid time {text!r} in {item!r}, expected HH:MM")
    return time(hour, minute)


def _add_window(
    day_spans: list[tuple[time, time, str]],
    start: time,
    end: time,
    *,
    item: str,
    weekday: int,
) -> None:
    """Add a window to one day's windows, refusing an overlap.

    Parameters:
      day_spans: the day's windows so far, as (start, end, item) triples.
      start: the new window's start.
      end: the new window's end.
      item: the item the new window comes from, for error messages.
      weekday: the day, for error messages.
    """
    for other_start, other_end, other_item in day_spans:
        if _offset(start) < _offset(other_end) and _offset(other_start) < _offset(end):
            where = "" if other_item == item else f" (from {other_item!r})"
            raise InvalidSchedule(
                f"window {_format_time(start)}-{_format_time(end)} overlaps"
                f" {_format_time(other_start)}-{_format_time(other_end)}{where}"
                f" on {DAY_NAMES[weekday]} in {item!r}"
            )
    day_spans.append((start, end, item))
    day_spans.sort()


def _check_window_times(start: object, end: object, *, label: str) -> None:
    """Check a window given to :class:`WeeklyHours` directly.

    Parameters:
      start: the window's start.
      end: the window's end.
      label: the window as text, for error messages.
    """
    for value in (start, end):
        if not isinstance(value, time) or value.tzinfo is not None:
            raise InvalidSchedule(f"window times must be naive datetime.time, in {label}")
        if value != END_OF_DAY and (value.second or value.microsecond):
            raise InvalidSchedule(f"window times must be whole minutes, in {label}")
    if start == END_OF_DAY:
        raise InvalidSchedule(f"{END_OF_DAY_TEXT} can only end a window, in {label}")
    if _offset(start) >= _offset(end):
        raise InvalidSchedule(f"start is not before end in {label}")


def _day_name(weekday: object) -> str:
    valid = isinstance(weekday, int) and not isinstance(weekday, bool)
    if not valid or not 0 <= weekday < len(DAY_NAMES):
        raise InvalidSchedule(f"weekday must be 0 (Monday) to 6 (Sunday), got {weekday!r}")
    return DAY_NAMES[weekday]


def _offset(value: time) -> timedelta:
    """Return ``value`` as the time since midnight; :data:`END_OF_DAY` is 24 hours."""
    if value == END_OF_DAY:
        return _ONE_DAY
    return timedelta(
        hours=value.hour,
        minutes=value.minute,
        seconds=value.second,
        microseconds=value.microsecond,
    )


def _format_time(value: object) -> str:
    if value == END_OF_DAY:
        return END_OF_DAY_TEXT
    if isinstance(value, time):
        return f"{value:%H:%M}"
    return repr(value)


def _neighbour_days(day: date) -> list[date]:
    """Return the days before, on and after ``day`` that exist in the calendar."""
    days = [day]
    if day > date.min:
        days.insert(0, day - _ONE_DAY)
    if day < date.max:
        days.append(day + _ONE_DAY)
    return days


def _naive_utc(value: datetime) -> datetime:
    # Storage is naive UTC; an aware value is converted rather than refused,
    # since its meaning is unambiguous.
    if value.tzinfo is None:
        return value
    return value.astimezone(_UTC).replace(tzinfo=None)


def _local_to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    """Return the naive UTC instant of the naive local wall time ``local``.

    A time that happens twice is its first occurrence (fold=0); a time that
    does not exist becomes the first instant after the gap.

    Parameters:
      local: naive local wall time.
      zone: the zone it is in.
    """
    utc = local.replace(tzinfo=zone).astimezone(_UTC)
    if utc.astimezone(zone).replace(tzinfo=None) == local:
        return utc.replace(tzinfo=None)

    # In a gap, fold=0 reads the time with the offset from before the jump,
    # landing after the transition, and fold=1 with the offset from after,
    # landing before it: the transition lies between, found by bisection.
    before = local.replace(tzinfo=zone, fold=1).astimezone(_UTC)
    after = utc
    after_offset = after.astimezone(zone).utcoffset()
    while after - before > timedelta(seconds=1):
        middle = before + (after - before) / 2
        middle = middle.replace(microsecond=0)
        if middle <= before:
            break
        if middle.astimezone(zone).utcoffset() == after_offset:
            after = middle
        else:
            before = middle
    return after.replace(tzinfo=None)


def _zone_info(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name.strip():
        raise InvalidSchedule("timezone is empty")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(f"unknown timezone {name!r}") from None


def _zone_exists(name: str) -> bool:
    try:
        _zone_info(name)
    except InvalidSchedule:
        return False
    return True


def _canonical_country(text: str) -> str:
    code = text.upper()
    if code not in holidays.list_supported_countries():
        raise InvalidSchedule(f"unknown holiday country {text!r}")
    return code


def _canonical_subdivision(country: str, text: str) -> str:
    subdivision = _subdivisions(country).get(text.casefold())
    if subdivision is None:
        raise InvalidSchedule(f"unknown holiday subdivision {text!r} for {country}")
    return subdivision


@functools.cache
def _subdivisions(country: str) -> dict[str, str]:
    """Return the country's subdivisions and their aliases, case-folded, to their codes.

    Parameters:
      country: a supported country code.
    """
    entity = holidays.country_holidays(country)
    names = {code.casefold(): code for code in entity.subdivisions}
    for alias, code in getattr(entity, "subdivisions_aliases", {}).items():
        names.setdefault(alias.casefold(), code)
    return names


@functools.cache
def _holiday_language(country: str) -> str | None:
    """Return the language to ask the ``holidays`` package for.

    Parameters:
      country: a supported country code.
    """
    entity = holidays.country_holidays(country)
    if HOLIDAY_LANGUAGE in entity.supported_languages:
        return HOLIDAY_LANGUAGE
    return entity.default_language


@functools.lru_cache(maxsize=HOLIDAY_CACHE_SIZE)
def _holiday_names(country: str, subdivision: str | None, year: int) -> dict[date, str]:
    """Return one year's holidays as a plain dict, built once per process.

    Building a ``holidays`` table costs about half a millisecond and its
    lookups parse their argument, so is_open reads this dict instead.

    Parameters:
      country: a supported country code.
      subdivision: one of its subdivisions, or None.
      year: the year.
    """
    table = holidays.country_holidays(
        country, subdiv=subdivision, years=year, language=_holiday_language(country)
    )
    return dict(table)
