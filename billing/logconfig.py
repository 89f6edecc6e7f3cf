"""Structured logs: JSON in production, readable lines on a terminal.

The context (request id, tenant, queue, contact) lives in structlog's
contextvars, so it follows a web request into the actors it enqueues (see
``tasks.middleware.LogContext``).
"""
from __future__ import annotations

import logging
import os
import re
import sys

import structlog

from billing.adapters.providers import mask_webhook_secrets

#: Keys copied from a web request into the broker messages it causes.
PROPAGATED_KEYS = ("request_id", "tenant", "queue_id")

#: Secrets that may turn up inside any logged text: API keys, admin tokens,
#: callback secrets. Only their recognisable start is kept.
_SECRET_PATTERN = re.compile(r"\b(bk|bat)_([0-9a-f]{4})[0-9a-f]*_[A-Za-z0-9_-]+|\b(whsec_)[A-Za-z0-9+/=]+")
#: Phones in E.164 inside any logged text: country code, area code and the
#: last four digits stay (enough to find a case, not to call someone).
_PHONE_PATTERN = re.compile(r"\+(\d{2})(\d{2})\d{4,7}(\d{4})\b")
#: Fields whose values are secret as a whole.
SECRET_FIELDS = frozenset({"api_key", "token", "secret", "password", "authorization", "webhook_secret", "callback_secret"})
#: Fields holding a PIX code: only its start is kept (it carries the payee's key).
PIX_FIELDS = frozenset({"codigo_pix", "pix"})
PIX_KEPT = 8


def _mask_text(text: str) -> str:
    # Webhook URLs carry the instance's secret (each provider declares its pattern).
    text = mask_webhook_secrets(text)
    text = _SECRET_PATTERN.sub(lambda m: f"{m.group(1)}_{m.group(2)}***" if m.group(1) else f"{m.group(3)}***", text)
    return _PHONE_PATTERN.sub(r"+\1 \2 *****-\3", text)


def mask_sensitive(logger, method_name, event_dict: dict) -> dict:
    """structlog processor: logs never hold API keys, secrets, full PIX codes
    or unmasked phone numbers, whichever field they arrive in."""
    for key, value in list(event_dict.items()):
        if key in SECRET_FIELDS and value:
            event_dict[key] = "***"
        elif key in PIX_FIELDS and isinstance(value, str):
            event_dict[key] = value[:PIX_KEPT] + "…"
        elif isinstance(value, str):
            event_dict[key] = _mask_text(value)
    return event_dict


def _add_pid(logger, method_name, event_dict: dict) -> dict:
    event_dict["pid"] = os.getpid()
    return event_dict


def configure_logging(*, log_format: str = "", level: str = "INFO") -> None:
    """Set up structlog and the standard logging bridge once per process.

    Parameters:
      log_format: ``json`` or ``console``; empty picks console on a terminal.
      level: a logging level name.
    """
    as_json = log_format == "json" or (not log_format and not sys.stderr.isatty())
    # Several processes write one stream in production (gunicorn, dramatiq).
    with_pid = [_add_pid] if as_json else []
    renderer = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, *with_pid, structlog.processors.format_exc_info, mask_sensitive, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        # One write per line (print() writes the text and the newline apart):
        # lines of processes sharing a stream then never run into each other.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # pika logs every refused or broken connection at ERROR, several lines and
    # a traceback each; the error reaches its caller anyway, and the worker's
    # broker (tasks.broker) logs one line per reconnect attempt.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    # Our own access log line (web/__init__.py) masks webhook secrets in paths.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # APScheduler logs every job run at INFO; our jobs log what they did.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
