"""Tests for billing.domain.duedates."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from billing.domain.duedates import InvalidDate, due_variables, parse_date, today_in


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2025-03-10", date(2025, 3, 10)),
        ("01/02/2025", date(2025, 2, 1)),
        ("1/2/2025", date(2025, 2, 1)),
        ("31/12/2024", date(2024, 12, 31)),
        ("29/02/2024", date(2024, 2, 29)),
        ("2024-02-29", date(2024, 2, 29)),
        ("  2025-03-10 \n", date(2025, 3, 10)),
        ("\t10/03/2025  ", date(2025, 3, 10)),
        ("2025-03-10T14:30:00", date(2025, 3, 10)),
        ("2025-03-10 14:30", date(2025, 3, 10)),
        ("2025-03-10T14:30:00.123456", date(2025, 3, 10)),
        # The date is taken as written; the offset is not applied.
        ("2025-03-10T23:30:00-03:00", date(2025, 3, 10)),
        ("2025-03-10T00:00:00Z", date(2025, 3, 10)),
        (date(2025, 3, 10), date(2025, 3, 10)),
        (datetime(2025, 3, 10, 23, 59), date(2025, 3, 10)),
    ],
)
def test_parse_date_accepts(value, expected):
    parsed = parse_date(value)
    assert parsed == expected
    assert type(parsed) is date


@pytest.mark.parametrize(
    "value, reason",
    [
        ("29/02/2025", "invalid date '29/02/2025'"),
        ("2025-02-29", "invalid date '2025-02-29'"),
        ("31/04/2025", "invalid date '31/04/2025'"),
        ("2025-13-01", "invalid date '2025-13-01'"),
        ("00/01/2025", "invalid date '00/01/2025'"),
        (" 29/02/2025 ", "invalid date '29/02/2025'"),
        ("amanhã", "unrecognized date 'amanhã', expected YYYY-MM-DD or DD/MM/YYYY"),
        ("2025/03/10", "unrecognized date '2025/03/10', expected YYYY-MM-DD or DD/MM/YYYY"),
        ("10-03-2025", "unrecognized date '10-03-2025', expected YYYY-MM-DD or DD/MM/YYYY"),
        ("10/03/25", "unrecognized date '10/03/25', expected YYYY-MM-DD or DD/MM/YYYY"),
        ("2025-03-10Tgarbage", "unrecognized date '2025-03-10Tgarbage', expected YYYY-MM-DD or DD/MM/YYYY"),
        ("", "date is empty"),
        ("   ", "date is empty"),
        (None, "date is empty"),
        (20250310, "date must be text, expected YYYY-MM-DD or DD/MM/YYYY"),
    ],
)
def test_parse_date_rejects(value, reason):
    with pytest.raises(InvalidDate) as caught:
        parse_date(value)
    assert str(caught.value) == reason


def test_invalid_date_is_a_value_error():
    assert issubclass(InvalidDate, ValueError)


TODAY = date(2025, 3, 10)


@pytest.mark.parametrize(
    "due, expected",
    [
        (TODAY, {"dias_atraso": 0, "dias_para_vencer": 0, "status_vencimento": "vence hoje"}),
        (TODAY + timedelta(days=1), {"dias_atraso": 0, "dias_para_vencer": 1, "status_vencimento": "a vencer"}),
        (TODAY - timedelta(days=1), {"dias_atraso": 1, "dias_para_vencer": 0, "status_vencimento": "vencido"}),
        ("2025-03-25", {"dias_atraso": 0, "dias_para_vencer": 15, "status_vencimento": "a vencer"}),
        ("08/02/2025", {"dias_atraso": 30, "dias_para_vencer": 0, "status_vencimento": "vencido"}),
        ("10/03/2024", {"dias_atraso": 365, "dias_para_vencer": 0, "status_vencimento": "vencido"}),
    ],
)
def test_due_variables(due, expected):
    assert due_variables(due, today=TODAY) == expected


def test_due_variables_rejects_bad_due_date():
    with pytest.raises(InvalidDate, match=r"^invalid date '29/02/2025'$"):
        due_variables("29/02/2025", today=TODAY)


def test_due_variables_today_is_keyword_only():
    with pytest.raises(TypeError):
        due_variables(TODAY, TODAY)  # type: ignore[misc]


# 01:30 UTC on 10 March is still 22:30 on 9 March in São Paulo (UTC-3).
LATE_EVENING_UTC = datetime(2025, 3, 10, 1, 30)


@pytest.mark.parametrize(
    "tz_name, now, expected",
    [
        ("America/Sao_Paulo", LATE_EVENING_UTC, date(2025, 3, 9)),
        ("America/Sao_Paulo", LATE_EVENING_UTC.replace(tzinfo=UTC), date(2025, 3, 9)),
        ("America/Sao_Paulo", datetime(2025, 3, 10, 3, 0), date(2025, 3, 10)),
        ("UTC", LATE_EVENING_UTC, date(2025, 3, 10)),
        ("America/Manaus", datetime(2025, 3, 10, 3, 30), date(2025, 3, 9)),
        ("America/Noronha", datetime(2025, 3, 10, 1, 30), date(2025, 3, 9)),
        ("Asia/Tokyo", datetime(2025, 3, 9, 16, 0), date(2025, 3, 10)),
        # An aware datetime in another zone is converted, not re-labelled.
        ("America/Sao_Paulo", datetime(2025, 3, 10, 0, 30, tzinfo=ZoneInfo("Europe/Lisbon")), date(2025, 3, 9)),
        ("  America/Sao_Paulo ", LATE_EVENING_UTC, date(2025, 3, 9)),
    ],
)
def test_today_in(tz_name, now, expected):
    assert today_in(tz_name, now=now) == expected


def test_today_in_defaults_to_now():
    before = datetime.now(ZoneInfo("America/Sao_Paulo")).date()
    today = today_in("America/Sao_Paulo")
    after = datetime.now(ZoneInfo("America/Sao_Paulo")).date()
    assert today in (before, after)


@pytest.mark.parametrize(
    "tz_name, reason",
    [
        ("Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("../etc/passwd", "unknown time zone '../etc/passwd'"),
        ("", "time zone is empty"),
        (None, "time zone is empty"),
    ],
)
def test_today_in_rejects_unknown_zone(tz_name, reason):
    with pytest.raises(ValueError) as caught:
        today_in(tz_name, now=LATE_EVENING_UTC)
    assert str(caught.value) == reason


def test_due_tomorrow_today_and_yesterday_across_the_utc_midnight():
    """At 01:30 UTC the UTC date is already the 10th; São Paulo is still on the 9th."""
    today = today_in("America/Sao_Paulo", now=LATE_EVENING_UTC)

    assert due_variables("2025-03-09", today=today)["status_vencimento"] == "vence hoje"
    assert due_variables("2025-03-10", today=today) == {
        "dias_atraso": 0,
        "dias_para_vencer": 1,
        "status_vencimento": "a vencer",
    }
    assert due_variables("2025-03-08", today=today) == {
        "dias_atraso": 1,
        "dias_para_vencer": 0,
        "status_vencimento": "vencido",
    }
    # By the UTC date, the 10th would wrongly be "vence hoje".
    utc_today = LATE_EVENING_UTC.date()
    assert due_variables("2025-03-10", today=utc_today)["status_vencimento"] == "vence hoje"
