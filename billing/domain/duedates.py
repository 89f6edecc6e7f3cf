"""Due dates: reading them as people write them, and the template variables
that say how far a bill is from its due date.

Dates are calendar dates with no time of day; "today" is the date in the
tenant's time zone (:func:`today_in`), never the server's, so a reminder sent
at 22:30 in São Paulo (01:30 UTC the next day) still says "vence hoje".
"""
from __future__ import annotations

import re
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from billing.domain.message_types import DueDateRule
from billing.domain.message_types import get as message_type

#: ``status_vencimento`` of a bill whose due date has passed.
STATUS_OVERDUE = "vencido"
#: ``status_vencimento`` of a bill due today.
STATUS_DUE_TODAY = "vence hoje"
#: ``status_vencimento`` of a bill due in the future.
STATUS_UPCOMING = "a vencer"

#: Names of the variables :func:`due_variables` returns.
VAR_DAYS_OVERDUE = "dias_atraso"
VAR_DAYS_UNTIL_DUE = "dias_para_vencer"
VAR_DUE_STATUS = "status_vencimento"

#: The accepted formats, as named in error messages.
ACCEPTED_FORMATS = "YYYY-MM-DD or DD/MM/YYYY"

# ISO date, optionally followed by a time (and offset) that is ignored: an
# export that writes "2025-03-10T00:00:00" still means 10 March.
_ISO_DATE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?)?",
    re.ASCII,
)
# Brazilian order, day first; one-digit day and month are common in spreadsheets.
_BR_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})", re.ASCII)


class InvalidDate(ValueError):
    """A date that cannot be read; ``str(exc)`` is the reason."""


def parse_date(value: str | date) -> date:
    """Read a due date.

    Accepted: ``YYYY-MM-DD``; ``DD/MM/YYYY`` (``01/02/2025`` is 1 February,
    day and month may have one digit); an ISO datetime such as
    ``YYYY-MM-DDTHH:MM:SS`` (optionally with fractions and ``Z`` or an offset),
    of which only the date part as written is kept, with no time-zone
    conversion; a :class:`datetime.date` (a datetime gives its date part).
    Surrounding whitespace is ignored.

    Parameters:
      value: the date as text, or a date.

    Raises:
      InvalidDate: if the text is empty, in no accepted format, or names a day
        that does not exist (``29/02/2025``).
    """
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if value is None:
        raise InvalidDate("date is empty")
    if not isinstance(value, str):
        raise InvalidDate(f"date must be text, expected {ACCEPTED_FORMATS}")

    text = value.strip()
    if not text:
        raise InvalidDate("date is empty")

    match = _ISO_DATE.fullmatch(text)
    if match:
        year, month, day = match.groups()
    else:
        match = _BR_DATE.fullmatch(text)
        if not match:
            raise InvalidDate(f"unrecognized date {text!r}, expected {ACCEPTED_FORMATS}")
        day, month, year = match.groups()

    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        raise InvalidDate(f"invalid date {text!r}") from None


def due_variables(due: str | date, *, today: date) -> dict[str, int | str]:
    """Return the template variables describing ``due`` as seen on ``today``.

    Parameters:
      due: the due date, in any form :func:`parse_date` accepts.
      today: the current date in the tenant's time zone (see :func:`today_in`).

    Returns:
      ``dias_atraso``: days past due, 0 unless overdue;
      ``dias_para_vencer``: days until due, 0 if due today or overdue;
      ``status_vencimento``: ``"vencido"``, ``"vence hoje"`` or ``"a vencer"``.

    Raises:
      InvalidDate: if ``due`` or ``today`` cannot be read.
    """
    days = (parse_date(due) - parse_date(today)).days
    if days < 0:
        status = STATUS_OVERDUE
    elif days == 0:
        status = STATUS_DUE_TODAY
    else:
        status = STATUS_UPCOMING
    return {
        VAR_DAYS_OVERDUE: max(-days, 0),
        VAR_DAYS_UNTIL_DUE: max(days, 0),
        VAR_DUE_STATUS: status,
    }


def type_contradiction(*, template_type: str, due: str | date, today: date) -> str | None:
    """Why a reminder of ``template_type`` cannot be about a bill due on ``due``.

    The type's declared :class:`DueDateRule` decides: ``overdue`` needs a due
    date before today (on the due day the bill is not late yet: "venceu há 0
    dias" would be false), ``upcoming`` one from today on, ``notification``
    has no rule.

    Parameters:
      template_type: a declared message type's name.
      due: the due date, in any form :func:`parse_date` accepts.
      today: the current date in the tenant's time zone (see :func:`today_in`).

    Returns:
      One sentence naming both dates, or None when the date fits the type.

    Raises:
      InvalidDate: if ``due`` cannot be read.
      InvalidRequest: ``template_type`` is not declared.
    """
    rule = message_type(template_type).due_date_rule
    days = (parse_date(due) - parse_date(today)).days
    shown = f"data_vencimento {parse_date(due):%d/%m/%Y}, today {parse_date(today):%d/%m/%Y}"
    if rule is DueDateRule.PAST_DUE and days >= 0:
        return f"{template_type} reminder for an invoice not yet past due ({shown})"
    if rule is DueDateRule.NOT_YET_DUE and days < 0:
        return f"{template_type} reminder for an invoice already past due ({shown})"
    return None


def today_in(tz_name: str, *, now: datetime | None = None) -> date:
    """Return the current date in the IANA time zone ``tz_name``.

    Parameters:
      tz_name: an IANA zone name such as ``"America/Sao_Paulo"``.
      now: the instant to convert: an aware datetime, or a naive one taken as
        UTC (the way the database stores times). Defaults to the current time.

    Raises:
      ValueError: if ``tz_name`` is not a known time zone.
    """
    zone = _zone(tz_name)
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(zone).date()


def _zone(tz_name: str) -> ZoneInfo:
    # ZoneInfo caches instances itself; this only turns its assorted errors
    # (KeyError subclass, ValueError for odd paths) into one clear message.
    if not isinstance(tz_name, str) or not tz_name.strip():
        raise ValueError("time zone is empty")
    try:
        return ZoneInfo(tz_name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz_name!r}") from None
