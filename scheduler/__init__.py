"""The scheduler: periodic jobs that only enqueue actors. One APScheduler
process in production (``billing scheduler``; a second one stands by), a
background thread inside ``billing run`` in the embedded mode."""
from __future__ import annotations

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from billing.config import Settings
from billing.db import database
from billing.models import Instance
from scheduler.leader import Leadership

log = structlog.get_logger(__name__)


def enqueue_recovery() -> None:
    """Lost bookings, stuck claims, pauses whose time is over."""
    from tasks import recover  # the worker setup reads the environment on import

    recover.send()


def enqueue_health_checks() -> None:
    """One state check per active instance."""
    from tasks import check_instance

    with database.connection_context():
        ids = [i.id for i in Instance.select(Instance.id).where(Instance.is_active == True)]  # noqa: E712
    for instance_id in ids:
        check_instance.send(instance_id)


def build_scheduler(*, blocking: bool, settings: Settings | None = None) -> BaseScheduler:
    """The scheduler with every job added.

    Parameters:
      blocking: True for the dedicated process, False for a background thread.
      settings: intervals (default: from the environment).
    """
    settings = settings or Settings.from_env()
    scheduler = BlockingScheduler() if blocking else BackgroundScheduler(daemon=True)
    common = dict(trigger="interval", max_instances=1, coalesce=True)
    scheduler.add_job(enqueue_recovery, seconds=settings.recovery_interval_seconds, id="recover", **common)
    scheduler.add_job(enqueue_health_checks, seconds=settings.health_interval_seconds, id="health", **common)
    return scheduler


def run_leader(*, blocking: bool, settings: Settings | None = None) -> tuple[BaseScheduler, Leadership]:
    """Wait to lead, then run the jobs (returns at once if not blocking).

    Parameters:
      blocking: run in this thread until stopped.
      settings: database URL and intervals (default: from the environment).
    """
    settings = settings or Settings.from_env()
    leadership = Leadership(settings.database_url)
    leadership.wait()
    scheduler = build_scheduler(blocking=blocking, settings=settings)
    scheduler.start()
    return scheduler, leadership
