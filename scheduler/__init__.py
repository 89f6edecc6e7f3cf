"""The scheduler: periodic jobs that only look at the database and enqueue
actors. One APScheduler process in production (``billing scheduler``), a
background thread inside ``billing run`` in the embedded mode."""
from __future__ import annotations

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from billing import recovery
from billing.config import Settings
from billing.db import database

log = structlog.get_logger(__name__)

def recover_lost_work() -> None:
    """Release bookings whose broker message was lost; dispatch queues with due work."""
    from tasks import dispatch  # the worker setup reads the environment on import

    with database.connection_context():
        released = recovery.release_lost_bookings()
        queue_ids = recovery.queues_with_due_work()
    for queue_id in queue_ids:
        dispatch.send(queue_id)
    if released or queue_ids:
        log.info("recovered", released=released, dispatched=len(queue_ids))


def build_scheduler(*, blocking: bool) -> BaseScheduler:
    """The scheduler with every job added.

    Parameters:
      blocking: True for the dedicated process, False for a background thread.
    """
    settings = Settings.from_env()
    scheduler = BlockingScheduler() if blocking else BackgroundScheduler(daemon=True)
    scheduler.add_job(
        recover_lost_work, "interval", seconds=settings.recovery_interval_seconds, id="recover",
        max_instances=1, coalesce=True,
    )
    return scheduler
