"""The scheduler run inside the test process: leader election on a real
PostgreSQL (and the SQLite file lock), the guarded jobs, the watchdog, and
the scheduler process that competes, leads, steps down and hands over."""
from __future__ import annotations

import threading

import dramatiq
import psycopg2
import pytest
import structlog
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import ConnectionClosed
from peewee import OperationalError

import scheduler
import tasks
from billing import workers
from billing.adapters.models import Heartbeat, Instance
from billing.config import Settings
from scheduler import leader
from scheduler.leader import Leadership, Watchdog
from tasks.broker import ReconnectingRabbitmqBroker
from tests.conftest import _fresh_postgres
from tests.e2e.stack import free_port
from tests.factories import make_tenant
from tests.waiting import stays, wait_until

#: A standby's retry period in these tests (production: 5 s).
FAST_STANDBY_SECONDS = 0.1

#: How long a handover may take here: a few standby retries.
HANDOVER_TIMEOUT_SECONDS = 5.0


@pytest.fixture
def fast_standby(monkeypatch):
    monkeypatch.setattr(leader, "STANDBY_RETRY_SECONDS", FAST_STANDBY_SECONDS)


@pytest.fixture
def electors(request):
    """Make Leadership objects on one URL; all are released after the test."""
    made: list[Leadership] = []

    def make(url: str) -> Leadership:
        made.append(Leadership(url))
        return made[-1]

    yield make
    for leadership in made:
        leadership.release()


def _compete(leadership: Leadership, stop: threading.Event) -> threading.Thread:
    """Run ``leadership.wait`` in a thread, as a standby scheduler does."""
    thread = threading.Thread(target=leadership.wait, kwargs={"stop": stop}, daemon=True)
    thread.start()
    return thread


@pytest.mark.postgres
def test_two_electors_one_wins_and_the_standby_takes_over_on_release(postgres_database_url, electors, fast_standby):
    first, second = electors(postgres_database_url), electors(postgres_database_url)
    assert first.try_acquire() and first.on_postgres
    stop = threading.Event()
    with structlog.testing.capture_logs() as logs:
        standby = _compete(second, stop)
        # Stands by while the leader holds the lock, through several retries.
        stays(lambda: standby.is_alive() and not second.still_held(), seconds=FAST_STANDBY_SECONDS * 3,
              message="the standby took the lock the leader holds")
        first.release()
        standby.join(HANDOVER_TIMEOUT_SECONDS)
    assert not standby.is_alive() and second.still_held() and not first.still_held()
    events = [entry["event"] for entry in logs]
    assert events.count("another scheduler leads; standing by") == 1 and events[-1] == "scheduler leads"


@pytest.mark.postgres
def test_the_standby_takes_over_when_the_leader_connection_dies(postgres_database_url, electors, fast_standby):

    first, second = electors(postgres_database_url), electors(postgres_database_url)
    assert first.try_acquire()
    standby = _compete(second, threading.Event())
    # The leader's session ends (a crashed process, a restarted server): its lock goes with it.
    admin = psycopg2.connect(postgres_database_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (first._conn.get_backend_pid(),))
    admin.close()
    standby.join(HANDOVER_TIMEOUT_SECONDS)
    assert not standby.is_alive() and second.still_held()
    assert not first.still_held()  # the old leader finds out when it asks
    assert not first.try_acquire()  # and competes again as a standby


def test_a_stop_ends_the_wait_without_leading(tmp_path, electors, fast_standby):
    url = f"sqlite:///{tmp_path}/billing.sqlite3"
    first, second = electors(url), electors(url)
    assert first.try_acquire() and not first.on_postgres
    assert not second.try_acquire() and not second.still_held()  # the file lock is taken
    stop = threading.Event()
    standby = _compete(second, stop)
    stop.set()
    standby.join(HANDOVER_TIMEOUT_SECONDS)
    assert not standby.is_alive() and not second.still_held()
    first.release()
    assert second.try_acquire() and second.still_held()


def test_a_standby_that_may_not_compete_does_not_try(tmp_path, electors, fast_standby):
    leadership = electors(f"sqlite:///{tmp_path}/billing.sqlite3")
    asked = []
    stop = threading.Event()

    def may_compete() -> bool:
        asked.append(1)
        if len(asked) >= 3:
            stop.set()
        return False

    assert leadership.wait(stop=stop, may_compete=may_compete) is False
    assert len(asked) == 3 and not leadership.still_held()


def test_an_unreachable_database_is_logged_once_per_outage(electors):
    leadership = electors("postgresql://postgres@127.0.0.1:1/postgres")  # nothing listens on port 1
    with structlog.testing.capture_logs() as logs:
        assert not leadership.try_acquire() and not leadership.try_acquire()
    assert [entry["event"] for entry in logs] == [
        "database unreachable; cannot compete for leadership until it answers"]


# --- the watchdog and the guarded jobs -----------------------------------------------------------


class _Lock:
    """A leadership whose answer the test sets (the lock itself is tested above)."""

    def __init__(self, held: bool = True) -> None:
        self.held = held

    def still_held(self) -> bool:
        return self.held


def test_the_watchdog_steps_down_on_a_lost_lock_or_a_long_broker_outage():
    lock = _Lock()
    watchdog = Watchdog(leadership=lock, broker_grace=0.2)
    assert watchdog.reason_to_step_down() == "" and watchdog.broker_failing_for() == 0.0
    watchdog.broker_failed()
    watchdog.broker_failed()  # the outage started at the first failure
    assert 0 < watchdog.broker_failing_for() < 0.2 and watchdog.reason_to_step_down() == ""
    wait_until(watchdog.reason_to_step_down, timeout=2, interval=0.02, message="the outage never outlasted its grace")
    assert watchdog.reason_to_step_down().startswith("broker unreachable for")
    watchdog.broker_ok()
    assert watchdog.reason_to_step_down() == ""
    lock.held = False
    assert watchdog.reason_to_step_down() == "leader lock lost"


@pytest.mark.parametrize(
    "error, logged",
    [
        (ConnectionClosed(OSError("connection refused")), "scheduler job failed: broker unreachable"),
        (OperationalError("server closed the connection\nunexpectedly"), "scheduler job failed: database unreachable"),
        (ZeroDivisionError("a bug"), "scheduler job failed"),
    ],
)
def test_a_failing_job_is_one_log_line_and_the_broker_failure_is_reported(error, logged):
    watchdog = Watchdog(leadership=_Lock(), broker_grace=30)

    def job() -> int:
        raise error

    run = scheduler.guarded_job(job, name="recover", watchdog=watchdog)
    with structlog.testing.capture_logs() as logs:
        run()  # does not raise: the scheduler goes on
    assert [(entry["event"], entry["job"]) for entry in logs] == [(logged, "recover")]
    assert (watchdog.broker_failing_for() > 0) is isinstance(error, ConnectionClosed)
    assert run.__name__ == "recover_job"


def test_a_job_runs_only_while_leading_and_a_success_clears_a_broker_outage():
    lock = _Lock(held=False)
    watchdog = Watchdog(leadership=lock, broker_grace=30)
    runs = []
    run = scheduler.guarded_job(lambda: runs.append(1) or 2, name="health", watchdog=watchdog)
    with structlog.testing.capture_logs() as logs:
        run()
        lock.held = True
        watchdog.broker_failed()
        run()
    assert len(runs) == 1 and watchdog.broker_failing_for() == 0.0
    assert [(e["event"], e.get("enqueued")) for e in logs] == [
        ("scheduler job skipped: not the leader", None), ("scheduler job ran", 2)]
    # The embedded mode's single process runs its jobs without a lock.
    embedded = scheduler.guarded_job(lambda: runs.append(1) or 0, name="recover")
    embedded()
    assert len(runs) == 2


def test_build_scheduler_adds_both_jobs_at_the_configured_intervals():

    settings = Settings(database_url="sqlite:///unused", recovery_interval_seconds=7, health_interval_seconds=11)
    background = scheduler.build_scheduler(blocking=False, settings=settings)
    jobs = {job.id: job for job in background.get_jobs()}
    assert set(jobs) == {"recover", "health"}
    assert jobs["recover"].trigger.interval.total_seconds() == 7 and jobs["health"].trigger.interval.total_seconds() == 11
    assert jobs["recover"].func.__name__ == "recover_job"
    # A leader's first runs start at once: lost work does not wait an interval.
    leading = scheduler.build_scheduler(blocking=True, settings=settings, watchdog=Watchdog(leadership=_Lock(), broker_grace=30))
    assert type(leading).__name__ == "BlockingScheduler"
    assert all(job.next_run_time is not None for job in leading.get_jobs())


# --- the scheduler process: compete, lead, step down, hand over ---------------------------------


@pytest.fixture
def keep_logging():
    """The scheduler wires logging (tasks.setup); give the test session its own back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.postgres
def test_two_scheduler_processes_one_leads_and_the_other_takes_over(postgres_database_url, fast_standby,
                                                                    keep_logging, monkeypatch):


    _fresh_postgres(postgres_database_url)
    make_tenant()  # one active instance: the health job enqueues one check
    monkeypatch.setattr(scheduler, "LEADER_CHECK_SECONDS", 0.1)
    settings = Settings(database_url=postgres_database_url, recovery_interval_seconds=1, health_interval_seconds=1)
    first = scheduler.run_leader(blocking=False, settings=settings)
    wait_until(first.leadership.still_held, timeout=HANDOVER_TIMEOUT_SECONDS, interval=0.05, message="nobody leads")
    second = scheduler.run_leader(blocking=False, settings=settings)
    try:

        broker = tasks.setup(settings=settings).broker  # the processes' broker (the same wiring)
        wait_until(lambda: broker.queues["maintenance"].qsize() >= 2, timeout=HANDOVER_TIMEOUT_SECONDS,
                   interval=0.05, message="the leader enqueued no recovery and no health check")
        assert not second.leadership.still_held()
        assert Heartbeat.get_by_id(workers.current_id()).info["leader"] is True

        # The leader's lock connection dies (a restarted server, a network cut): it steps down, and
        # both compete again; exactly one leads.
        with structlog.testing.capture_logs() as logs:
            admin = psycopg2.connect(postgres_database_url)
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(%s)", (first.leadership._conn.get_backend_pid(),))
            admin.close()
            wait_until(lambda: any(e["event"] == "scheduler steps down" for e in logs), timeout=HANDOVER_TIMEOUT_SECONDS,
                       interval=0.05, message="the leader did not step down")
            leaders = wait_until(lambda: [p for p in (first, second) if p.leadership.still_held()],
                                 timeout=HANDOVER_TIMEOUT_SECONDS, interval=0.05, message="nobody leads again")
        assert len(leaders) == 1
        assert [e["reason"] for e in logs if e["event"] == "scheduler steps down"] == ["leader lock lost"]
        # The leader stops (SIGTERM): the standby takes over.
        leader_now, standby = (first, second) if leaders[0] is first else (second, first)
        leader_now.stop.set()
        wait_until(standby.leadership.still_held, timeout=HANDOVER_TIMEOUT_SECONDS, interval=0.05,
                   message="the standby did not take over")
    finally:
        first.stop.set()
        second.stop.set()
    wait_until(lambda: not first.leadership._held and not second.leadership._held, timeout=HANDOVER_TIMEOUT_SECONDS,
               interval=0.05, message="the processes did not stop")
    broker.flush_all()


def test_enqueue_jobs_send_on_the_wired_broker(db, keep_logging):

    broker = tasks.setup(settings=Settings(database_url=db), configure_logging=False).broker
    setup = make_tenant()
    tenants_second = make_tenant("other")
    Instance.update(is_active=False).where(Instance.id == tenants_second.instance.id).execute()
    try:
        assert scheduler.enqueue_recovery() == 1
        assert scheduler.enqueue_health_checks() == 1  # the active instance only
        messages = [dramatiq.Message.decode(raw) for raw in list(broker.queues["maintenance"].queue)]
        assert [(m.actor_name, list(m.args)) for m in messages] == [
            ("recover", []), ("check_instance", [setup.instance.id])]
    finally:
        broker.flush_all()


def test_a_leader_that_stepped_down_for_the_broker_competes_only_once_it_answers(tmp_path):


    process = scheduler.SchedulerProcess(settings=Settings(database_url=f"sqlite:///{tmp_path}/b.sqlite3"))
    assert process._may_compete()  # no broker trouble
    process._broker_down = True
    process._broker = ReconnectingRabbitmqBroker(url=f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")
    assert not process._may_compete() and process._broker_down
    process._broker = StubBroker()
    assert process._may_compete() and not process._broker_down
