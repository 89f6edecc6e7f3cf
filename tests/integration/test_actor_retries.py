"""Transient failures retry through Dramatiq's own Retry: one INFO line per
retry, not an ERROR with a traceback (issue 8, point 18), and a database
outage retries on short, fixed, jittered delays rather than an exponential
backoff grown during the outage."""
from __future__ import annotations

import importlib

import dramatiq
import pytest
from peewee import OperationalError

from billing import dispatch, sending


@pytest.fixture
def actors(sqlite_db, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", sqlite_db)
    monkeypatch.delenv("BROKER_URL", raising=False)
    module = importlib.import_module("tasks.actors")
    from billing.adapters import db as billing_db

    billing_db.connect(sqlite_db)  # importing tasks may have bound another database first
    return module


def test_a_transient_gateway_failure_is_a_dramatiq_retry(actors, monkeypatch):
    monkeypatch.setattr(sending, "send_one", lambda contact_id, slot=None, refusals=0: sending.SendReport(
        sending.Outcome.RETRY, contact_id, "q", "gateway answered 503"))
    with pytest.raises(dramatiq.Retry) as raised:
        actors.send_contact.fn(7)
    assert "503" in str(raised.value)
    assert actors._retry_when(0, raised.value) and not actors._retry_when(actors.MAX_MESSAGE_RETRIES + 1, raised.value)


def test_a_database_outage_is_a_quiet_retry_on_a_short_delay(actors, monkeypatch):
    def down(*args, **kwargs):
        raise OperationalError("could not connect to server: Connection refused\n\tIs the server running?")

    monkeypatch.setattr(dispatch, "plan_dispatch", down)
    delays = set()
    for _ in range(20):
        with pytest.raises(actors.DatabaseUnavailable) as raised:
            actors.dispatch.fn("a63c0000-0000-0000-0000-000000000000")
        delays.add(raised.value.delay)
        assert "\n" not in str(raised.value)  # one line
    base = actors.DATABASE_RETRY_DELAY_MS
    assert all(0.7 * base <= d <= 1.3 * base for d in delays) and len(delays) > 1  # jittered
    # an outage of minutes is waited out, longer than other failures are retried
    assert actors._retry_when(actors.MAX_MESSAGE_RETRIES + 50, raised.value)
    assert not actors._retry_when(actors.MAX_DATABASE_RETRIES + 1, raised.value)


def test_an_unexpected_error_is_not_retried_forever(actors):
    assert not actors._retry_when(0, ValueError("a bug"))
