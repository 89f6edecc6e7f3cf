"""Dramatiq middleware: per-message database connections and log context."""
from __future__ import annotations

import dramatiq
import structlog

from billing.db import database
from billing.logconfig import PROPAGATED_KEYS

#: Message option that carries the enqueuer's log context.
LOG_CONTEXT_OPTION = "log_context"


class DatabaseConnection(dramatiq.Middleware):
    """Check a database connection out for each message and back in after,
    so a connection broken by a database restart is not reused forever."""

    def before_process_message(self, broker, message):
        database.connect(reuse_if_open=True)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if not database.is_closed():
            database.close()

    after_skip_message = after_process_message


class LogContext(dramatiq.Middleware):
    """Carry request id, tenant and queue from the enqueuer into the actor."""

    def before_enqueue(self, broker, message, delay):
        context = structlog.contextvars.get_contextvars()
        carried = {key: context[key] for key in PROPAGATED_KEYS if key in context}
        if carried:
            message.options[LOG_CONTEXT_OPTION] = carried

    def before_process_message(self, broker, message):
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            **message.options.get(LOG_CONTEXT_OPTION, {}), actor=message.actor_name, message_id=message.message_id
        )

    def after_process_message(self, broker, message, *, result=None, exception=None):
        structlog.contextvars.clear_contextvars()

    after_skip_message = after_process_message
