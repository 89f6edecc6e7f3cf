"""The scheduler's leader lock on a real PostgreSQL: held means held by this
connection's backend, a lost connection is noticed, and jobs run only while
the lock is held."""
from __future__ import annotations

import psycopg2
import pytest
import structlog
from dramatiq.errors import ConnectionClosed

from scheduler import guarded_job
from scheduler.leader import PG_LEADER_LOCK_KEY, Leadership, Watchdog

pytestmark = pytest.mark.postgres


@pytest.fixture
def leaders(postgres_database_url):
    made = []

    def make() -> Leadership:
        made.append(Leadership(postgres_database_url))
        return made[-1]

    yield make
    for leadership in made:
        leadership.release()


def _terminate_backend(url: str, leadership: Leadership) -> None:
    backend = leadership._conn.get_backend_pid()
    admin = psycopg2.connect(url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (backend,))
    finally:
        admin.close()


def test_one_process_leads_and_still_held_asks_the_server(leaders):
    first, second = leaders(), leaders()
    assert first.try_acquire()
    assert not second.try_acquire()
    assert first.still_held()
    assert not second.still_held()

    # The connection is alive but its backend no longer holds the lock: a
    # "SELECT 1" check would still say held.
    with first._conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_unlock(%s)", (PG_LEADER_LOCK_KEY,))
    assert not first.still_held()
    assert second.try_acquire()


def test_a_lost_lock_connection_is_noticed_and_the_lock_passes_on(leaders, postgres_database_url):
    first, second = leaders(), leaders()
    assert first.try_acquire()
    _terminate_backend(postgres_database_url, first)

    assert not first.still_held()
    assert second.try_acquire() and second.still_held()
    # The first one reconnects to compete again, and stands by.
    assert not first.try_acquire()
    assert not first.still_held()


def test_an_unreachable_database_is_a_refusal_not_a_crash():
    # Nothing listens on port 1.
    leadership = Leadership("postgresql://postgres@127.0.0.1:1/postgres")
    assert not leadership.try_acquire()
    assert not leadership.still_held()


def test_jobs_run_only_while_the_lock_is_held(leaders, postgres_database_url):
    leadership = leaders()
    assert leadership.try_acquire()
    watchdog = Watchdog(leadership=leadership, broker_grace=30)
    runs = []
    job = guarded_job(lambda: runs.append(1) or 1, name="test", watchdog=watchdog)

    job()
    assert runs == [1]
    assert watchdog.reason_to_step_down() == ""

    _terminate_backend(postgres_database_url, leadership)
    with structlog.testing.capture_logs() as logs:
        job()
    assert runs == [1], "a job ran after the lock was lost"
    assert any(entry["event"] == "scheduler job skipped: not the leader" for entry in logs)
    assert watchdog.reason_to_step_down() == "leader lock lost"


def test_a_broker_outage_is_one_line_per_run_and_steps_down_after_the_grace(leaders):
    leadership = leaders()
    assert leadership.try_acquire()
    watchdog = Watchdog(leadership=leadership, broker_grace=0)

    def enqueue() -> int:
        raise ConnectionClosed("connection refused")

    job = guarded_job(enqueue, name="recover", watchdog=watchdog)
    with structlog.testing.capture_logs() as logs:
        job()
        job()
    assert [entry["event"] for entry in logs] == ["scheduler job failed: broker unreachable"] * 2
    assert all("exc_info" not in entry for entry in logs)
    assert watchdog.reason_to_step_down().startswith("broker unreachable")

    guarded_job(lambda: 1, name="recover", watchdog=watchdog)()
    assert watchdog.reason_to_step_down() == ""
