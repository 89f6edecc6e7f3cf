"""Dramatiq broker and actors. ``dramatiq tasks`` runs them in a worker.

Importing this package reads the environment (DATABASE_URL, BROKER_URL),
connects the database and declares the actors on the chosen broker, so a
worker process, the web process and another Python service all get the same
setup from ``import tasks``.
"""
from __future__ import annotations

from billing.config import Settings
from billing.adapters.db import connect
from billing.logconfig import configure_logging
from tasks.broker import build_broker

settings = Settings.from_env()
configure_logging(log_format=settings.log_format, level=settings.log_level)
connect(settings.database_url)
broker = build_broker(settings)

from tasks.actors import (  # noqa: E402  (actors need the broker first)
    auto_reply, check_instance, deliver_callback, dispatch, enqueue_auto_replies, enqueue_callbacks, recover,
    jobs, send_contact, start_queue,
)

__all__ = [
    "auto_reply", "broker", "check_instance", "enqueue_auto_replies", "deliver_callback", "dispatch", "enqueue_callbacks", "recover", "send_contact",
    "jobs", "settings", "start_queue",
]
