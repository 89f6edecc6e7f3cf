"""The scheduler: periodic jobs that only enqueue actors. One APScheduler
process in production (``billing scheduler``; a second one stands by), a
background thread inside ``billing run`` in the embedded mode.

In production the process competes for the leader lock (scheduler.leader),
runs the jobs while it holds it, and steps down when a watchdog finds the lock
lost (a PostgreSQL restart closed its connection) or the broker unreachable for
longer than a health interval; then it stands by and competes again. Every job
also checks the lock right before it runs, so two processes never run jobs at
once, even between two watchdog checks.
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from dramatiq.errors import BrokerConnectionError
from peewee import InterfaceError, OperationalError

from billing.adapters.db import database
from billing.adapters.models import Instance
from billing.config import Settings
from scheduler.leader import Leadership, Watchdog

log = structlog.get_logger(__name__)

#: How often (seconds) the leader asks the server whether it still holds the lock.
LEADER_CHECK_SECONDS = 2

#: What the database says while it restarts or is unreachable.
DATABASE_DOWN = (OperationalError, InterfaceError)


def enqueue_recovery() -> int:
    """Lost bookings, stuck claims, pauses whose time is over.

    Returns:
      Messages enqueued.
    """
    from tasks import recover  # sent on the broker tasks.setup() wired

    recover.send()
    return 1


def enqueue_health_checks() -> int:
    """One state check per active instance.

    Returns:
      Messages enqueued.
    """
    from tasks import check_instance

    with database.connection_context():
        ids = [i.id for i in Instance.select(Instance.id).where(Instance.is_active == True)]  # noqa: E712
    for instance_id in ids:
        check_instance.send(instance_id)
    return len(ids)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


def guarded_job(func: Callable[[], int], *, name: str, watchdog: Watchdog | None = None) -> Callable[[], None]:
    """``func`` as a scheduler job: run only while this process leads, and a
    failure is one log line (the broker or the database being away is not a
    traceback every interval).

    Parameters:
      func: the job; returns how many messages it enqueued.
      name: the job's name in the logs.
      watchdog: the leader's watchdog (None: the embedded mode's single process,
        which needs no check).
    """

    def run() -> None:
        if watchdog is not None and not watchdog.leadership.still_held():
            log.warning("scheduler job skipped: not the leader", job=name)
            return
        try:
            enqueued = func()
        except BrokerConnectionError as exc:
            if watchdog is not None:
                watchdog.broker_failed()
            log.warning("scheduler job failed: broker unreachable", job=name, error=_one_line(exc))
            return
        except DATABASE_DOWN as exc:
            log.warning("scheduler job failed: database unreachable", job=name, error=_one_line(exc))
            return
        except Exception:  # a bug: the traceback is needed, and the scheduler goes on
            log.exception("scheduler job failed", job=name)
            return
        if watchdog is None:
            log.debug("scheduler job ran", job=name, enqueued=enqueued)
            return
        if enqueued:
            watchdog.broker_ok()
        # One line per run: which process ran which job when (two leaders
        # would show as interleaved pids).
        log.info("scheduler job ran", job=name, enqueued=enqueued)

    run.__name__ = f"{name}_job"
    return run


def build_scheduler(*, blocking: bool, settings: Settings, watchdog: Watchdog | None = None) -> BaseScheduler:
    """The scheduler with every job added.

    Parameters:
      blocking: True for a scheduler that runs in the calling thread, False
        for a background thread.
      settings: intervals.
      watchdog: the production leader's watchdog: each job checks the lock
        first, reports the broker's state, and the first runs start at once
        (a new leader does not wait an interval for lost work).
    """
    scheduler = BlockingScheduler() if blocking else BackgroundScheduler(daemon=True)
    common = {"trigger": "interval", "max_instances": 1, "coalesce": True}
    if watchdog is not None:
        common["next_run_time"] = datetime.now(UTC)
    scheduler.add_job(guarded_job(enqueue_recovery, name="recover", watchdog=watchdog),
                      seconds=settings.recovery_interval_seconds, id="recover", **common)
    scheduler.add_job(guarded_job(enqueue_health_checks, name="health", watchdog=watchdog),
                      seconds=settings.health_interval_seconds, id="health", **common)
    return scheduler


class SchedulerProcess:
    """The ``billing scheduler`` process: heartbeat, compete, lead, step down,
    again, until :attr:`stop` is set.

    Parameters:
      settings: database URL and intervals.
      stop: set it to end :meth:`run` (SIGTERM does).
    """

    def __init__(self, *, settings: Settings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.leadership = Leadership(settings.database_url)
        self._broker_down = False

    def run(self) -> None:
        """Lead whenever possible until stopped; returns after a clean stop."""
        import tasks
        from tasks.middleware import HeartbeatThread

        # The broker the jobs enqueue on (a no-op when the CLI wired it already).
        self._broker = tasks.setup(settings=self.settings).broker
        heartbeat = HeartbeatThread(kind="scheduler", info={"leader": False, "pid": os.getpid()})
        heartbeat.start()
        try:
            while not self.stop.is_set():
                if not self.leadership.wait(stop=self.stop, may_compete=self._may_compete):
                    break
                heartbeat.update_info(leader=True)
                reason = self._lead()
                heartbeat.update_info(leader=False)
                if reason:
                    log.warning("scheduler steps down", reason=reason)
        finally:
            self.leadership.release()
            heartbeat.stop()
            log.info("scheduler stopped")

    def _lead(self) -> str:
        """Run the jobs until stopped or the watchdog says stop; returns why
        ('' for a requested stop)."""
        watchdog = Watchdog(leadership=self.leadership, broker_grace=self.settings.health_interval_seconds)
        scheduler = build_scheduler(blocking=False, settings=self.settings, watchdog=watchdog)
        scheduler.start()
        reason = ""
        try:
            while not self.stop.wait(LEADER_CHECK_SECONDS):
                reason = watchdog.reason_to_step_down()
                if reason:
                    break
        finally:
            # Wait for a job in progress: the lock is released only after it.
            scheduler.shutdown(wait=True)
            self.leadership.release()
        self._broker_down = reason.startswith("broker")
        return reason

    def _may_compete(self) -> bool:
        """A process that stepped down for the broker competes again only once
        it reaches the broker: leading without it would enqueue nothing."""
        if not self._broker_down:
            return True
        from tasks.broker import broker_reachable

        if not broker_reachable(self._broker):
            return False
        log.info("broker reachable again; competing for leadership")
        self._broker_down = False
        return True


def run_leader(*, blocking: bool = True, settings: Settings | None = None) -> SchedulerProcess:
    """The production scheduler: compete for the lead, run the jobs while
    leading, step down on loss, compete again.

    Parameters:
      blocking: run in this thread until SIGTERM/SIGINT; False runs it in a
        daemon thread (set the returned process's ``stop`` to end it).
      settings: database URL and intervals (default: from the environment).
    """
    process = SchedulerProcess(settings=settings or Settings.from_env())
    if not blocking:
        threading.Thread(target=process.run, name="scheduler", daemon=True).start()
        return process
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: process.stop.set())
    process.run()
    return process
