"""Waiting for something to happen, with a deadline.

Tests never sleep a fixed time and hope: they poll a condition until it holds
or a deadline passes, and then fail saying what did not happen. A fixed sleep
is either too short on a busy machine (a flaky failure) or too long everywhere
(a slow suite).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

#: How often :func:`wait_until` looks again by default (seconds): often enough
#: that a test does not idle, rarely enough that polling a process's database
#: or HTTP API does not load it.
POLL_SECONDS = 0.2

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], *, timeout: float, interval: float = POLL_SECONDS,
               message: str | Callable[[], str] = "condition not met") -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Parameters:
      predicate: called with no arguments; its first truthy result is returned.
      timeout: seconds to keep trying before failing.
      interval: seconds between two calls.
      message: what did not happen, for the failure; a callable is called only
        then (to show the state at the deadline, e.g. a process's log).

    Returns:
      The first truthy value ``predicate`` returned.

    Raises:
      AssertionError: ``predicate`` was still falsy after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"after {timeout:g}s: {message() if callable(message) else message}")
        time.sleep(interval)


def stays(predicate: Callable[[], bool], *, seconds: float, interval: float = POLL_SECONDS,
          message: str | Callable[[], str] = "condition stopped holding") -> None:
    """Check that ``predicate`` holds for ``seconds`` (something must NOT happen).

    Time passing is the point here (a paused queue sends nothing for a while),
    so this is the one place a test spends a fixed time; it still fails as soon
    as the condition breaks instead of at the end.

    Parameters:
      predicate: called with no arguments; must stay truthy.
      seconds: how long it must hold.
      interval: seconds between two calls.
      message: what happened, for the failure; a callable is called only then.

    Raises:
      AssertionError: ``predicate`` returned something falsy.
    """
    deadline = time.monotonic() + seconds
    while True:
        if not predicate():
            raise AssertionError(message() if callable(message) else message)
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)
