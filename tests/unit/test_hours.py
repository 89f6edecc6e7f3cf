"""Tests for billing.domain.hours."""
from __future__ import annotations

import unicodedata
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest

from billing.domain import hours as hours_module
from billing.domain.hours import (
    BRAZIL_DDD_TIMEZONES,
    END_OF_DAY,
    EXTRA_HOLIDAY_NAME,
    NEXT_OPEN_SEARCH_DAYS,
    Calendar,
    InvalidSchedule,
    WeeklyHours,
    calendar_for_recipient,
    parse_holidays,
    parse_hours,
    phone_timezone,
)
from billing.domain.phones import BRAZIL_AREA_CODES

SAO_PAULO = "America/Sao_Paulo"
NEW_YORK = "America/New_York"
BUSINESS_WEEK = "mon-fri 08:00-18:00"
# São Paulo has been UTC-3 all year since 2019.
SP_OFFSET = timedelta(hours=3)


def sp(*args: int) -> datetime:
    """São Paulo local wall time as the naive UTC datetime storage uses."""
    return datetime(*args) + SP_OFFSET


def utc_of(local: datetime, zone: str) -> datetime:
    """Naive UTC of a (fold-aware) naive local time, computed independently."""
    return local.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC).replace(tzinfo=None)


def weekdays(*days: int, start: time, end: time) -> tuple[tuple[int, time, time], ...]:
    return tuple((day, start, end) for day in days)


def monday_holiday() -> tuple[date, str]:
    """The first Brazilian national holiday from 2025 on that falls on a Monday
    whose Friday before and Tuesday after are working days."""
    for year in range(2025, 2045):
        table = holidays.country_holidays("BR", years=range(year - 1, year + 2), language="pt_BR")
        for day in sorted(d for d in table if d.year == year):
            if day.weekday() != 0:
                continue
            if day - timedelta(days=3) in table or day + timedelta(days=1) in table:
                continue
            return day, table[day]
    raise AssertionError("no Monday holiday found")


@pytest.fixture
def business_calendar() -> Calendar:
    return Calendar(parse_hours(BUSINESS_WEEK), SAO_PAULO)


# --- parsing ---------------------------------------------------------------


def test_parse_weekdays_and_saturday():
    parsed = parse_hours("mon-fri 08:00-18:00, sat 08:00-12:00")
    assert parsed == WeeklyHours(
        windows=weekdays(0, 1, 2, 3, 4, start=time(8), end=time(18)) + ((5, time(8), time(12)),)
    )
    assert parsed.always is False
    assert parsed.describe() == "mon-fri 08:00-18:00, sat 08:00-12:00"


@pytest.mark.parametrize(
    "text",
    [
        "seg-sex 08:00-18:00, sáb 08:00-12:00",
        "SEG-SEX 08:00-18:00, SAB 08:00-12:00",
        "Seg - Sex  8:00 - 18:00 ,  Sáb 08:00–12:00 ",
        # Accents typed as combining characters (macOS, some keyboards).
        unicodedata.normalize("NFD", "seg-sex 08:00-18:00, sáb 08:00-12:00"),
        "sat 08:00-12:00, mon-fri 08:00-18:00",
    ],
)
def test_parse_portuguese_case_and_spacing(text):
    assert parse_hours(text) == parse_hours("mon-fri 08:00-18:00, sat 08:00-12:00")


def test_parse_dom_is_sunday_and_qua_qui_ter():
    assert parse_hours("dom 09:00-10:00, ter 09:00-10:00, qua 09:00-10:00, qui 09:00-10:00").windows == (
        (1, time(9), time(10)),
        (2, time(9), time(10)),
        (3, time(9), time(10)),
        (6, time(9), time(10)),
    )


@pytest.mark.parametrize("text", ["always", " ALWAYS ", "Always"])
def test_parse_always(text):
    parsed = parse_hours(text)
    assert parsed == WeeklyHours(always=True)
    assert parsed.windows == ()
    assert parsed.describe() == "always"


def test_parse_wrapping_range():
    parsed = parse_hours("fri-mon 08:00-18:00")
    assert parsed.windows == weekdays(0, 4, 5, 6, start=time(8), end=time(18))
    assert parsed.describe() == "fri-mon 08:00-18:00"


def test_parse_two_windows_per_day_and_24_00():
    parsed = parse_hours("mon-fri 08:00-12:00 13:00-18:00, sat 20:00-24:00")
    assert parsed.windows[:2] == ((0, time(8), time(12)), (0, time(13), time(18)))
    assert len(parsed.windows) == 11
    assert parsed.windows[-1] == (5, time(20), END_OF_DAY)
    assert parsed.describe() == "mon-fri 08:00-12:00 13:00-18:00, sat 20:00-24:00"


def test_parse_touching_windows_are_not_overlapping():
    parsed = parse_hours("mon 08:00-12:00 12:00-18:00")
    assert parsed.windows == ((0, time(8), time(12)), (0, time(12), time(18)))


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("mon-fri 08:00-18:00, sat 08:00-12:00", "mon-fri 08:00-18:00, sat 08:00-12:00"),
        ("sat 08:00-12:00, mon-fri 08:00-18:00", "mon-fri 08:00-18:00, sat 08:00-12:00"),
        ("mon 08:00-18:00, tue 08:00-18:00, wed 08:00-18:00", "mon-wed 08:00-18:00"),
        ("sun 10:00-14:00, mon 10:00-14:00", "sun-mon 10:00-14:00"),
        ("fri-mon 08:00-18:00, wed 09:00-10:00", "wed 09:00-10:00, fri-mon 08:00-18:00"),
        ("mon-sun 00:00-24:00", "mon-sun 00:00-24:00"),
        ("thu-wed 09:00-17:00", "mon-sun 09:00-17:00"),
        ("mon-fri 13:00-18:00 08:00-12:00", "mon-fri 08:00-12:00 13:00-18:00"),
        ("mon-fri 08:00-18:00, fri 19:00-20:00", "mon-thu 08:00-18:00, fri 08:00-18:00 19:00-20:00"),
        ("seg 7:05-9:30", "mon 07:05-09:30"),
        ("mon-mon 08:00-09:00", "mon 08:00-09:00"),
        ("always", "always"),
        ("never", "never"),
    ],
)
def test_describe_is_canonical_and_round_trips(text, canonical):
    parsed = parse_hours(text)
    assert parsed.describe() == canonical
    assert parse_hours(canonical) == parsed
    assert parse_hours(canonical).describe() == canonical


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "hours are empty"),
        ("   ", "hours are empty"),
        ("mon-fri", "no time range in 'mon-fri', expected DAYS HH:MM-HH:MM"),
        ("xyz 08:00-18:00", "unknown day 'xyz' in 'xyz 08:00-18:00'"),
        ("mon-fry 08:00-18:00", "unknown day 'fry' in 'mon-fry 08:00-18:00'"),
        ("mon,wed 08:00-18:00", "no time range in 'mon', expected DAYS HH:MM-HH:MM"),
        ("mon 08:00", "invalid time range '08:00' in 'mon 08:00', expected HH:MM-HH:MM"),
        ("mon 08:00-12:00-13:00", "invalid time range '08:00-12:00-13:00' in 'mon 08:00-12:00-13:00', expected HH:MM-HH:MM"),
        ("mon 8-18", "invalid time '8' in 'mon 8-18', expected HH:MM"),
        ("mon 08:00-25:00", "invalid time '25:00' in 'mon 08:00-25:00', expected HH:MM"),
        ("mon 08:60-18:00", "invalid time '08:60' in 'mon 08:60-18:00', expected HH:MM"),
        ("mon 08h00-18h00", "invalid time '08h00' in 'mon 08h00-18h00', expected HH:MM"),
        ("mon 24:00-24:00", "24:00 can only end a window, in 'mon 24:00-24:00'"),
        ("mon 18:00-08:00", "start 18:00 is not before end 08:00 in 'mon 18:00-08:00'"),
        ("mon 08:00-08:00", "start 08:00 is not before end 08:00 in 'mon 08:00-08:00'"),
        (
            "mon 08:00-12:00 11:00-13:00",
            "window 11:00-13:00 overlaps 08:00-12:00 on mon in 'mon 08:00-12:00 11:00-13:00'",
        ),
        (
            "mon-fri 08:00-18:00, wed 17:00-19:00",
            "window 17:00-19:00 overlaps 08:00-18:00 (from 'mon-fri 08:00-18:00') on wed in 'wed 17:00-19:00'",
        ),
        ("mon 08:00-12:00,", "empty item in hours (stray comma?)"),
        ("mon 08:00-12:00,, tue 08:00-12:00", "empty item in hours (stray comma?)"),
        ("always, mon 08:00-12:00", "'always' cannot be combined with other items"),
    ],
)
def test_parse_errors(text, message):
    with pytest.raises(InvalidSchedule) as caught:
        parse_hours(text)
    assert str(caught.value) == message


def test_parse_rejects_non_text():
    with pytest.raises(InvalidSchedule, match="^hours must be text$"):
        parse_hours(None)


def test_invalid_schedule_is_a_value_error():
    assert issubclass(InvalidSchedule, ValueError)


@pytest.mark.parametrize(
    "windows, always, message",
    [
        (((0, time(8), time(18)),), True, "'always' takes no windows"),
        (((7, time(8), time(18)),), False, "weekday must be 0 (Monday) to 6 (Sunday), got 7"),
        (((0, time(18), time(8)),), False, "start is not before end in mon 18:00-08:00"),
        (((0, time(8, 0, 30), time(18)),), False, "window times must be whole minutes, in mon 08:00-18:00"),
        (((0, "08:00", time(18)),), False, "window times must be naive datetime.time, in mon '08:00'-18:00"),
        (((0, END_OF_DAY, END_OF_DAY),), False, "24:00 can only end a window, in mon 24:00-24:00"),
        (
            ((2, time(8), time(12)), (2, time(11), time(13))),
            False,
            "overlapping windows on wed 11:00-13:00",
        ),
        (((0, time(8)),), False, "a window must be (weekday, start, end), got (0, datetime.time(8, 0))"),
    ],
)
def test_weekly_hours_validates_direct_construction(windows, always, message):
    with pytest.raises(InvalidSchedule) as caught:
        WeeklyHours(windows=windows, always=always)
    assert str(caught.value) == message


def test_weekly_hours_sorts_windows():
    built = WeeklyHours(windows=((5, time(8), time(12)), (0, time(13), time(18)), (0, time(8), time(12))))
    assert built.windows == ((0, time(8), time(12)), (0, time(13), time(18)), (5, time(8), time(12)))
    assert built == parse_hours("mon 08:00-12:00 13:00-18:00, sat 08:00-12:00")


# --- holidays setting --------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("BR", ("BR", None)),
        ("br", ("BR", None)),
        (" BR ", ("BR", None)),
        ("BR-SP", ("BR", "SP")),
        ("br-sp", ("BR", "SP")),
        ("BR-São Paulo", ("BR", "SP")),
        ("none", (None, None)),
        ("NONE", (None, None)),
        ("US-CA", ("US", "CA")),
        ("PT", ("PT", None)),
    ],
)
def test_parse_holidays(text, expected):
    assert parse_holidays(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "holidays are empty; use a country code such as 'BR' or 'none'"),
        ("XX", "unknown holiday country 'XX'"),
        ("brazil", "unknown holiday country 'brazil'"),
        ("BR-ZZ", "unknown holiday subdivision 'ZZ' for BR"),
        ("BR-", "missing subdivision in holidays 'BR-'"),
    ],
)
def test_parse_holidays_errors(text, message):
    with pytest.raises(InvalidSchedule) as caught:
        parse_holidays(text)
    assert str(caught.value) == message


# --- calendar construction -------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"timezone": "America/Nowhere"}, "unknown timezone 'America/Nowhere'"),
        ({"timezone": "../etc/passwd"}, "unknown timezone '../etc/passwd'"),
        ({"timezone": ""}, "timezone is empty"),
        ({"timezone": SAO_PAULO, "holiday_country": "XX"}, "unknown holiday country 'XX'"),
        ({"timezone": SAO_PAULO, "subdivision": "ZZ"}, "unknown holiday subdivision 'ZZ' for BR"),
        (
            {"timezone": SAO_PAULO, "holiday_country": None, "subdivision": "SP"},
            "holiday subdivision needs a holiday country",
        ),
        (
            {"timezone": SAO_PAULO, "extra_holidays": frozenset({datetime(2026, 9, 8)})},
            "extra holidays must be dates",
        ),
    ],
)
def test_calendar_rejects_bad_settings(kwargs, message):
    with pytest.raises(InvalidSchedule) as caught:
        Calendar(parse_hours(BUSINESS_WEEK), **kwargs)
    assert str(caught.value) == message


def test_calendar_rejects_text_hours():
    with pytest.raises(InvalidSchedule, match=r"^hours must be WeeklyHours \(see parse_hours\)$"):
        Calendar(BUSINESS_WEEK, SAO_PAULO)


def test_calendar_normalizes_settings():
    calendar = Calendar(
        parse_hours(BUSINESS_WEEK), SAO_PAULO, holiday_country="br", subdivision="sp",
        extra_holidays={date(2026, 9, 8)},
    )
    assert calendar.holiday_country == "BR"
    assert calendar.subdivision == "SP"
    assert calendar.extra_holidays == frozenset({date(2026, 9, 8)})
    assert Calendar(parse_hours(BUSINESS_WEEK), SAO_PAULO, holiday_country="none").holiday_country is None
    # Equal settings make equal (and hashable) calendars, whatever their caches hold.
    calendar.is_open(datetime(2026, 9, 8, 12))
    same = Calendar(parse_hours(BUSINESS_WEEK), SAO_PAULO, holiday_country="BR", subdivision="SP",
                    extra_holidays=frozenset({date(2026, 9, 8)}))
    assert calendar == same
    assert hash(calendar) == hash(same)


# --- the key scenario: a long weekend in São Paulo --------------------------


def test_monday_holiday_weekend(business_calendar):
    monday, name = monday_holiday()
    friday = monday - timedelta(days=3)
    tuesday = monday + timedelta(days=1)
    assert (friday.weekday(), tuesday.weekday()) == (4, 1)

    at = lambda day, hour, minute=0: sp(day.year, day.month, day.day, hour, minute)  # noqa: E731

    assert business_calendar.is_open(at(friday, 17, 59)) is True
    assert business_calendar.current_window_end(at(friday, 17, 59)) == at(friday, 18)
    assert at(friday, 18) == datetime(friday.year, friday.month, friday.day, 21)
    assert business_calendar.is_open(at(friday, 18)) is False
    assert business_calendar.current_window_end(at(friday, 18)) is None

    tuesday_open = datetime(tuesday.year, tuesday.month, tuesday.day, 11)  # 08:00 local
    assert business_calendar.next_open(at(friday, 18)) == tuesday_open
    assert at(tuesday, 8) == tuesday_open
    for day in (friday + timedelta(days=1), friday + timedelta(days=2), monday):
        for hour in (0, 8, 9, 12, 17):
            assert business_calendar.is_open(at(day, hour)) is False
        assert business_calendar.next_open(at(day, 9)) == tuesday_open
    assert business_calendar.is_open(at(tuesday, 7, 59)) is False
    assert business_calendar.is_open(tuesday_open) is True

    assert business_calendar.is_holiday(monday) == name
    assert business_calendar.is_holiday(friday) is None
    assert business_calendar.is_holiday(tuesday) is None


def test_monday_holiday_is_a_real_national_holiday():
    monday, name = monday_holiday()
    # 2025-04-21 (Tiradentes) is a Monday but follows Good Friday, so the first
    # clean case is Independence Day 2026.
    assert (monday, name) == (date(2026, 9, 7), "Independência do Brasil")


def test_good_friday_and_tiradentes_2025(business_calendar):
    # Easter 2025 is 20 April: Good Friday 18 April, Tiradentes Monday 21 April.
    assert business_calendar.is_holiday(date(2025, 4, 18)) == "Sexta-feira Santa"
    assert business_calendar.is_holiday(date(2025, 4, 21)) == "Tiradentes"
    assert business_calendar.next_open(sp(2025, 4, 17, 18)) == sp(2025, 4, 22, 8)
    assert business_calendar.open_seconds_between(sp(2025, 4, 17, 17), sp(2025, 4, 22, 9)) == 2 * 3600


def test_holiday_names_do_not_depend_on_the_locale(monkeypatch):
    hours_module._holiday_names.cache_clear()
    monkeypatch.setenv("LANGUAGE", "en_US")
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    try:
        calendar = Calendar(parse_hours(BUSINESS_WEEK), SAO_PAULO)
        assert calendar.is_holiday(date(2026, 9, 7)) == "Independência do Brasil"
    finally:
        hours_module._holiday_names.cache_clear()


def test_extra_holiday_closes_a_weekday():
    calendar = Calendar(
        parse_hours(BUSINESS_WEEK), SAO_PAULO, extra_holidays=frozenset({date(2026, 9, 9)})
    )
    assert calendar.is_holiday(date(2026, 9, 9)) == EXTRA_HOLIDAY_NAME
    assert calendar.is_open(sp(2026, 9, 9, 10)) is False
    assert calendar.is_open(sp(2026, 9, 8, 10)) is True
    assert calendar.next_open(sp(2026, 9, 8, 18)) == sp(2026, 9, 10, 8)
    # A national holiday keeps its own name even if the tenant lists it too.
    both = Calendar(parse_hours(BUSINESS_WEEK), SAO_PAULO, extra_holidays=frozenset({date(2026, 9, 7)}))
    assert both.is_holiday(date(2026, 9, 7)) == "Independência do Brasil"


def test_no_holidays_opens_a_national_holiday():
    calendar = Calendar(parse_hours(BUSINESS_WEEK), SAO_PAULO, holiday_country=None)
    assert calendar.is_holiday(date(2026, 9, 7)) is None
    assert calendar.is_open(sp(2026, 9, 7, 10)) is True
    assert calendar.next_open(sp(2026, 9, 4, 18)) == sp(2026, 9, 7, 8)
    assert Calendar(parse_hours(BUSINESS_WEEK), SAO_PAULO, holiday_country="none").is_open(sp(2026, 9, 7, 10))


def test_state_holidays_need_the_subdivision():
    # 9 July is a São Paulo state holiday (Revolução Constitucionalista), a Thursday in 2026.
    national = Calendar(parse_hours(BUSINESS_WEEK), SAO_PAULO)
    state = Calendar(parse_hours(BUSINESS_WEEK), SAO_PAULO, subdivision="SP")
    assert national.is_open(sp(2026, 7, 9, 10)) is True
    assert state.is_open(sp(2026, 7, 9, 10)) is False
    assert state.is_holiday(date(2026, 7, 9)) == "Revolução Constitucionalista"


def test_holiday_tables_are_built_once(monkeypatch):
    built = []
    real = holidays.country_holidays

    def counting(*args, **kwargs):
        if kwargs.get("years") is not None:
            built.append((args, kwargs.get("subdiv"), kwargs["years"]))
        return real(*args, **kwargs)

    hours_module._holiday_names.cache_clear()
    monkeypatch.setattr(hours_module.holidays, "country_holidays", counting)
    try:
        calendar = Calendar(parse_hours(BUSINESS_WEEK), SAO_PAULO)
        for minute in range(0, 3 * 24 * 60, 7):
            calendar.is_open(sp(2026, 9, 4) + timedelta(minutes=minute))
        other = Calendar(parse_hours("always"), SAO_PAULO)
        other.next_open(sp(2026, 9, 7, 10))
        assert built == [(("BR",), None, 2026)]
    finally:
        hours_module._holiday_names.cache_clear()


# --- windows, ends and ETAs -------------------------------------------------


def test_current_window_end_joins_touching_windows():
    calendar = Calendar(parse_hours("mon 08:00-12:00 12:00-18:00, tue 08:00-12:00 13:00-18:00"), SAO_PAULO)
    assert calendar.current_window_end(sp(2026, 9, 14, 9)) == sp(2026, 9, 14, 18)
    assert calendar.current_window_end(sp(2026, 9, 15, 9)) == sp(2026, 9, 15, 12)
    assert calendar.current_window_end(sp(2026, 9, 15, 12)) is None
    assert calendar.next_open(sp(2026, 9, 15, 12)) == sp(2026, 9, 15, 13)


def test_current_window_end_across_midnight_stops_at_a_holiday():
    hours = parse_hours("fri 20:00-24:00, sat 00:00-06:00")
    assert Calendar(hours, SAO_PAULO).current_window_end(sp(2026, 9, 11, 21)) == sp(2026, 9, 12, 6)
    closed_saturday = Calendar(hours, SAO_PAULO, extra_holidays=frozenset({date(2026, 9, 12)}))
    assert closed_saturday.current_window_end(sp(2026, 9, 11, 21)) == sp(2026, 9, 12, 0)


def test_always_open_without_holidays():
    calendar = Calendar(parse_hours("always"), SAO_PAULO, holiday_country=None)
    at = datetime(2026, 9, 7, 3, 17)
    assert calendar.is_open(at) is True
    assert calendar.next_open(at) == at
    assert calendar.current_window_end(at) == at + timedelta(days=NEXT_OPEN_SEARCH_DAYS)
    assert calendar.open_seconds_between(at, at + timedelta(days=2)) == 2 * 86400
    assert calendar.time_after_open_seconds(at, 90) == at + timedelta(seconds=90)


def test_always_still_closes_on_holidays():
    calendar = Calendar(parse_hours("always"), SAO_PAULO)
    assert calendar.is_open(sp(2026, 9, 6, 23, 59)) is True
    assert calendar.current_window_end(sp(2026, 9, 6, 23, 59)) == sp(2026, 9, 7, 0)
    assert calendar.is_open(sp(2026, 9, 7, 12)) is False
    assert calendar.next_open(sp(2026, 9, 7, 12)) == sp(2026, 9, 8, 0)


def test_never_open():
    calendar = Calendar(parse_hours("never"), SAO_PAULO)
    assert calendar.is_open(sp(2026, 9, 8, 10)) is False
    assert calendar.next_open(sp(2026, 9, 8, 10)) is None
    assert calendar.current_window_end(sp(2026, 9, 8, 10)) is None
    assert calendar.open_seconds_between(sp(2026, 9, 8), sp(2026, 9, 20)) == 0.0
    assert calendar.time_after_open_seconds(sp(2026, 9, 8), 1) is None
    assert calendar.time_after_open_seconds(sp(2026, 9, 8), 0) == sp(2026, 9, 8)


def test_eta_across_a_holiday_weekend(business_calendar):
    start = sp(2026, 9, 4, 17)  # Friday 17:00, Monday 7 September is a holiday
    assert business_calendar.time_after_open_seconds(start, 3 * 3600) == sp(2026, 9, 8, 10)
    assert business_calendar.open_seconds_between(start, sp(2026, 9, 8, 10)) == 3 * 3600
    # Work ending as the window closes ends at the close, not at the next opening.
    assert business_calendar.time_after_open_seconds(start, 3600) == sp(2026, 9, 4, 18)
    assert business_calendar.time_after_open_seconds(start, 1800.5) == sp(2026, 9, 4, 17, 30) + timedelta(
        microseconds=500000
    )
    assert business_calendar.time_after_open_seconds(start, 0) == start
    # Starting while closed: the clock runs from the next opening.
    assert business_calendar.time_after_open_seconds(sp(2026, 9, 5, 12), 60) == sp(2026, 9, 8, 8, 1)
    # Ten working days of sending.
    assert business_calendar.time_after_open_seconds(sp(2026, 9, 8, 8), 10 * 10 * 3600) == sp(2026, 9, 21, 18)


def test_open_seconds_between(business_calendar):
    assert business_calendar.open_seconds_between(sp(2026, 9, 4, 17, 30), sp(2026, 9, 8, 9)) == 1.5 * 3600
    assert business_calendar.open_seconds_between(sp(2026, 9, 8, 9), sp(2026, 9, 8, 9)) == 0.0
    assert business_calendar.open_seconds_between(sp(2026, 9, 8, 10), sp(2026, 9, 8, 9)) == 0.0
    # Monday 14 to Sunday 20 September 2026: five full days.
    assert business_calendar.open_seconds_between(sp(2026, 9, 14), sp(2026, 9, 21)) == 5 * 10 * 3600


def test_negative_seconds_are_refused(business_calendar):
    with pytest.raises(ValueError, match="^seconds must not be negative$"):
        business_calendar.time_after_open_seconds(sp(2026, 9, 8), -1)


def test_aware_datetimes_are_converted(business_calendar):
    aware = datetime(2026, 9, 4, 17, 59, tzinfo=ZoneInfo(SAO_PAULO))
    assert business_calendar.is_open(aware) is True
    assert business_calendar.next_open(aware) == sp(2026, 9, 4, 17, 59)
    assert business_calendar.next_open(aware).tzinfo is None
    assert business_calendar.current_window_end(aware) == sp(2026, 9, 4, 18)


# --- daylight saving time ---------------------------------------------------


@pytest.mark.parametrize(
    "saturday_utc, sunday_open_utc, monday_open_utc",
    [
        # Spring forward, Sunday 9 March 2025 02:00 EST -> 03:00 EDT.
        (datetime(2025, 3, 8, 23), datetime(2025, 3, 9, 12), datetime(2025, 3, 10, 12)),
        # Fall back, Sunday 2 November 2025 02:00 EDT -> 01:00 EST.
        (datetime(2025, 11, 1, 23), datetime(2025, 11, 2, 13), datetime(2025, 11, 3, 13)),
    ],
)
def test_dst_weekends_open_at_local_eight(saturday_utc, sunday_open_utc, monday_open_utc):
    every_day = Calendar(parse_hours("mon-sun 08:00-18:00"), NEW_YORK, holiday_country=None)
    friday_open = every_day.next_open(saturday_utc - timedelta(days=1, hours=12))
    saturday_open = every_day.next_open(saturday_utc - timedelta(hours=12))
    sunday_open = every_day.next_open(saturday_utc)
    monday_open = every_day.next_open(sunday_open + timedelta(hours=12))

    assert sunday_open == sunday_open_utc
    assert monday_open == monday_open_utc
    for opened in (friday_open, saturday_open, sunday_open, monday_open):
        local = opened.replace(tzinfo=UTC).astimezone(ZoneInfo(NEW_YORK))
        assert local.time() == time(8)
    # The offset changes by one hour across the weekend.
    assert abs((monday_open - saturday_open) - timedelta(days=2)) == timedelta(hours=1)
    assert sunday_open - saturday_open != timedelta(days=1)
    assert sunday_open == utc_of(datetime(sunday_open.year, sunday_open.month, sunday_open.day, 8), NEW_YORK)
    assert every_day.current_window_end(sunday_open) == sunday_open + timedelta(hours=10)


def test_window_starting_in_the_spring_forward_gap_opens_after_it():
    calendar = Calendar(parse_hours("sun 02:30-05:00"), NEW_YORK, holiday_country=None)
    # 02:30 does not exist on 9 March 2025; 03:00 EDT (07:00 UTC) is the first valid instant.
    assert calendar.next_open(datetime(2025, 3, 8)) == datetime(2025, 3, 9, 7)
    assert calendar.is_open(datetime(2025, 3, 9, 6, 59, 59)) is False
    assert calendar.is_open(datetime(2025, 3, 9, 7)) is True
    assert calendar.current_window_end(datetime(2025, 3, 9, 7)) == datetime(2025, 3, 9, 9)
    assert calendar.open_seconds_between(datetime(2025, 3, 9), datetime(2025, 3, 10)) == 2 * 3600
    # The Sundays around it open at 02:30 local as usual.
    assert calendar.next_open(datetime(2025, 3, 1)) == datetime(2025, 3, 2, 7, 30)  # EST
    assert calendar.next_open(datetime(2025, 3, 10)) == datetime(2025, 3, 16, 6, 30)  # EDT


def test_window_wholly_inside_the_gap_never_opens_that_day():
    calendar = Calendar(parse_hours("sun 02:10-02:50"), NEW_YORK, holiday_country=None)
    assert calendar.next_open(datetime(2025, 3, 8)) == datetime(2025, 3, 16, 6, 10)


def test_window_ending_in_the_gap_ends_when_it_closes():
    calendar = Calendar(parse_hours("sun 01:00-02:30"), NEW_YORK, holiday_country=None)
    assert calendar.current_window_end(datetime(2025, 3, 9, 6, 30)) == datetime(2025, 3, 9, 7)
    assert calendar.open_seconds_between(datetime(2025, 3, 9), datetime(2025, 3, 10)) == 3600


def test_ambiguous_times_use_the_first_occurrence():
    # 01:00-02:00 happens twice on 2 November 2025: EDT (05:00-06:00 UTC), then EST (06:00-07:00 UTC).
    starts = Calendar(parse_hours("sun 01:30-05:00"), NEW_YORK, holiday_country=None)
    assert starts.next_open(datetime(2025, 11, 1, 12)) == datetime(2025, 11, 2, 5, 30)
    assert starts.is_open(datetime(2025, 11, 2, 6, 15)) is True  # 01:15 EST, after the first 01:30
    ends = Calendar(parse_hours("sun 00:00-01:30"), NEW_YORK, holiday_country=None)
    assert ends.current_window_end(datetime(2025, 11, 2, 5)) == datetime(2025, 11, 2, 5, 30)
    assert ends.is_open(datetime(2025, 11, 2, 6, 15)) is False  # 01:15 EST, after the first 01:30


def test_dst_days_have_23_and_25_hours():
    calendar = Calendar(parse_hours("mon-sun 00:00-24:00"), NEW_YORK, holiday_country=None)
    spring = calendar.open_seconds_between(datetime(2025, 3, 9, 5), datetime(2025, 3, 10, 4))
    autumn = calendar.open_seconds_between(datetime(2025, 11, 2, 4), datetime(2025, 11, 3, 5))
    assert (spring, autumn) == (23 * 3600, 25 * 3600)


def test_midnight_transition_in_santiago():
    # Chile springs forward at 24:00: Sunday 7 September 2025 starts at 01:00 (-03).
    calendar = Calendar(parse_hours("sat 20:00-24:00, sun 00:00-06:00"), "America/Santiago", holiday_country=None)
    assert calendar.next_open(datetime(2025, 9, 7, 4, 30)) == datetime(2025, 9, 7, 4, 30)
    assert calendar.next_open(datetime(2025, 9, 6, 12)) == datetime(2025, 9, 7, 0)  # 20:00 -04
    assert calendar.current_window_end(datetime(2025, 9, 7, 1)) == datetime(2025, 9, 7, 9)  # 06:00 -03
    assert calendar.open_seconds_between(datetime(2025, 9, 6), datetime(2025, 9, 8)) == 9 * 3600


# --- is_open and next_open agree ----------------------------------------------


@pytest.mark.parametrize(
    "hours_text, zone, start",
    [
        (BUSINESS_WEEK, SAO_PAULO, sp(2026, 8, 31)),  # includes the 7 September holiday
        ("mon-fri 08:00-12:00 13:00-18:00, sat 08:00-12:00", SAO_PAULO, sp(2025, 4, 14)),
        ("mon-sun 08:00-18:00, sun 01:30-02:45", NEW_YORK, datetime(2025, 3, 1)),
        ("mon-sun 08:00-18:00, sun 00:30-02:15", NEW_YORK, datetime(2025, 10, 26)),
        ("fri-mon 22:00-24:00 00:00-03:00", "America/Santiago", datetime(2025, 8, 30)),
    ],
)
def test_is_open_and_next_open_agree_on_a_sweep(hours_text, zone, start):
    calendar = Calendar(parse_hours(hours_text), zone)
    opened = closed = 0
    for step in range(14 * 48 + 1):
        at = start + timedelta(minutes=30 * step)
        following = calendar.next_open(at)
        if calendar.is_open(at):
            opened += 1
            assert following == at
            end = calendar.current_window_end(at)
            assert end > at
            assert calendar.is_open(end - timedelta(microseconds=1)) is True
            assert calendar.is_open(end) is False
        else:
            closed += 1
            assert following > at
            assert calendar.is_open(following) is True
            assert calendar.is_open(following - timedelta(microseconds=1)) is False
            assert calendar.current_window_end(at) is None
            assert calendar.open_seconds_between(at, following) == 0.0
    assert opened and closed


# --- recipients' time zones -------------------------------------------------


@pytest.mark.parametrize(
    "phone, zone",
    [
        ("+5511987654321", "America/Sao_Paulo"),
        ("+5521987654321", "America/Sao_Paulo"),
        ("+5561987654321", "America/Sao_Paulo"),
        ("+5592988887777", "America/Manaus"),
        ("+5597988887777", "America/Manaus"),
        ("+5568999998888", "America/Rio_Branco"),
        ("+5565999998888", "America/Cuiaba"),
        ("+5567999998888", "America/Campo_Grande"),
        ("+5569999998888", "America/Porto_Velho"),
        ("+5595999998888", "America/Boa_Vista"),
        ("+5591999998888", "America/Belem"),
        ("+5593999998888", "America/Santarem"),
        ("+5596999998888", "America/Belem"),
        ("+5581999998888", "America/Recife"),
        ("+5582999998888", "America/Maceio"),
        ("+5579999998888", "America/Maceio"),
        ("+5571999998888", "America/Bahia"),
        ("+5585999998888", "America/Fortaleza"),
        ("+5598999998888", "America/Fortaleza"),
        ("+5563999998888", "America/Araguaina"),
        ("+551133334444", "America/Sao_Paulo"),
        ("+12125551234", "America/New_York"),
        ("+13105551234", "America/Los_Angeles"),
        ("+861012345678", "Asia/Shanghai"),
    ],
)
def test_phone_timezone(phone, zone):
    assert phone_timezone(phone, default="Europe/Lisbon") == zone


@pytest.mark.parametrize(
    "phone",
    [
        "+447911123456",  # phonenumbers names four UK zones
        "+351912345678",  # Lisbon or the Azores
        "+5520999998888",  # DDD 20 does not exist
        "+999123",
        "not a phone",
        "",
        None,
    ],
)
def test_phone_timezone_falls_back_to_default(phone):
    assert phone_timezone(phone, default="America/Sao_Paulo") == "America/Sao_Paulo"


def test_every_ddd_has_an_existing_zone():
    assert set(BRAZIL_DDD_TIMEZONES) == BRAZIL_AREA_CODES
    for ddd, zone in BRAZIL_DDD_TIMEZONES.items():
        assert ZoneInfo(zone).key == zone, ddd
        assert zone.startswith("America/"), ddd


def test_calendar_for_recipient(business_calendar):
    manaus = calendar_for_recipient(business_calendar, "+5592988887777")
    assert manaus.timezone == "America/Manaus"
    assert manaus.hours == business_calendar.hours
    assert manaus.holiday_country == "BR"
    # 08:30 in São Paulo is 07:30 in Manaus.
    assert business_calendar.is_open(sp(2026, 9, 8, 8, 30)) is True
    assert manaus.is_open(sp(2026, 9, 8, 8, 30)) is False
    assert manaus.next_open(sp(2026, 9, 8, 8, 30)) == sp(2026, 9, 8, 9)
    assert manaus.is_open(sp(2026, 9, 7, 12)) is False  # the tenant's holidays still apply

    assert calendar_for_recipient(business_calendar, "+5511987654321") is business_calendar
    assert calendar_for_recipient(business_calendar, "+447911123456") is business_calendar
    assert calendar_for_recipient(business_calendar, "+5592911112222") is manaus
