"""The one place the domain asks what time it is.

Times are naive UTC everywhere in storage so SQLite and PostgreSQL compare them
the same way; time zones are applied only where a person sees or decides
(business hours, "today" for due dates). Tests swap the source to control time.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

ClockSource = Callable[[], datetime]


def _system_utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


_source: ClockSource = _system_utcnow


def utcnow() -> datetime:
    """The current time as a naive UTC datetime."""
    return _source()


@contextlib.contextmanager
def frozen(source: ClockSource) -> Iterator[None]:
    """Use ``source`` as the clock inside the block (tests).

    Parameters:
      source: a callable returning a naive UTC datetime.
    """
    global _source
    previous, _source = _source, source
    try:
        yield
    finally:
        _source = previous


def as_utc_iso(value: datetime | None) -> str | None:
    """Render a stored naive-UTC datetime as ISO 8601 (milliseconds) with a Z suffix."""
    if value is None:
        return None
    return value.isoformat(timespec="milliseconds") + "Z"
