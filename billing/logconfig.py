"""Structured logs: JSON in production, readable lines on a terminal.

The context (request id, tenant, queue, contact) lives in structlog's
contextvars, so it follows a web request into the actors it enqueues (see
``tasks.middleware.LogContext``).
"""
from __future__ import annotations

import logging
import sys

import structlog

#: Keys copied from a web request into the broker messages it causes.
PROPAGATED_KEYS = ("request_id", "tenant", "queue_id")


def configure_logging(*, log_format: str = "", level: str = "INFO") -> None:
    """Set up structlog and the standard logging bridge once per process.

    Parameters:
      log_format: ``json`` or ``console``; empty picks console on a terminal.
      level: a logging level name.
    """
    as_json = log_format == "json" or (not log_format and not sys.stderr.isatty())
    renderer = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # pika logs every connection hiccup at INFO/WARNING; Dramatiq reports what matters.
    logging.getLogger("pika").setLevel(logging.ERROR)
    # APScheduler logs every job run at INFO; our jobs log what they did.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
