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
#: A secret named in free text, as a gateway's error body or a config dump
#: writes it (``"apikey": "..."``, ``db_password=...``, ``token: ...``): the
#: name stays, the value goes.
_NAMED_SECRET_PATTERN = re.compile(
    r"""(?P<name>["']?[\w-]*(?:password|passwd|secret|token|api[_-]?key|authorization)[\w-]*["']?\s*[:=]\s*["']?)"""
    r"""(?P<value>[^"'\s,;&}]+)""",
    re.IGNORECASE,
)
#: An Authorization header's credentials in free text.
_BEARER_PATTERN = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
#: A PIX copy-paste code (EMV: "000201" first, "6304" and a 4-hex CRC last;
#: a merchant name inside may hold spaces). Without its CRC (cut short), the
#: code runs to the next space. Only its start is kept.
_PIX_PATTERN = re.compile(r"\b(000201\d{2})(?:.{0,480}?6304[0-9A-Fa-f]{4}|\S*)")
#: WhatsApp chat ids: ``<phone>@s.whatsapp.net``, ``<phone>@c.us``,
#: ``<id>@lid`` (a device suffix ``:12`` may follow the number).
_JID_PATTERN = re.compile(r"(?<![\d.])\d{4,16}(\d{4})(?::\d+)?@(s\.whatsapp\.net|c\.us|lid)\b")
#: Phones in E.164 inside any logged text, with or without separators
#: (``+5511987654321``, ``+55 11 98765-4321``, ``+55 (11) 9 8765-4321``):
#: country code, area code and the last four digits stay (enough to find a
#: case, not to call someone).
_PHONE_PATTERN = re.compile(r"\+(\d{2})[\s.-]?\(?(\d{2})\)?(?:[\s.-]?\d){4,7}?[\s.-]?(\d{4})(?!\d)")
#: Brazilian phones without the plus: 55 + area code + 8 or 9 digits, as
#: gateways write them (``5511987654321``).
_BARE_PHONE_PATTERN = re.compile(r"(?<![\d.])55(\d{2})9?\d{4}(\d{4})(?![\d.])")
#: National forms: ``(11) 98765-4321``, ``(11)987654321``, ``(11) 3456-7890``,
#: and a mobile without parentheses, ``11 98765-4321`` (a landline without
#: them looks like any two numbers).
_NATIONAL_PHONE_PATTERN = re.compile(
    r"(?<![\d.])(?:\((\d{2})\)\s?9?[\s.]?\d{4}|(\d{2})\s9\d{4}(?=-))[\s.-]?(\d{4})(?![\d.])"
)
#: Fields whose values are secret as a whole.
SECRET_FIELDS = frozenset({"api_key", "token", "secret", "password", "authorization", "webhook_secret", "callback_secret"})
#: Any other field named like a secret (``db_password``, ``access_token``...).
_SECRET_FIELD_NAME = re.compile(r"(?:^|_)(?:password|passwd|secret|token|apikey|api_key|authorization)$", re.IGNORECASE)
#: Fields holding a PIX code: only its start is kept (it carries the payee's key).
PIX_FIELDS = frozenset({"codigo_pix", "pix"})
PIX_KEPT = 8
#: Numbers this large may be phones written without a plus (55 + 10 digits).
PHONE_AS_NUMBER_FROM = 10**11
#: How deep nested event fields (dicts, lists) are masked; deeper ones are dropped.
MAX_MASK_DEPTH = 8


def _mask_text(text: str) -> str:
    """``text`` with every secret, PIX code and phone in it masked."""
    # Webhook URLs carry the instance's secret (each provider declares its pattern).
    text = mask_webhook_secrets(text)
    text = _SECRET_PATTERN.sub(lambda m: f"{m.group(1)}_{m.group(2)}***" if m.group(1) else f"{m.group(3)}***", text)
    text = _BEARER_PATTERN.sub(lambda m: f"{m.group(1)} ***", text)
    text = _NAMED_SECRET_PATTERN.sub(lambda m: f"{m.group('name')}***", text)
    # PIX codes before phones: a code holds digit runs a phone pattern would take.
    text = _PIX_PATTERN.sub(lambda m: f"{m.group(1)}…", text)
    text = _JID_PATTERN.sub(r"*****\1@\2", text)
    text = _PHONE_PATTERN.sub(r"+\1 \2 *****-\3", text)
    text = _BARE_PHONE_PATTERN.sub(r"55 \1 *****-\2", text)
    return _NATIONAL_PHONE_PATTERN.sub(lambda m: f"({m.group(1) or m.group(2)}) *****-{m.group(3)}", text)


def _is_secret_field(key) -> bool:
    return isinstance(key, str) and (key.lower() in SECRET_FIELDS or bool(_SECRET_FIELD_NAME.search(key)))


def _mask_value(key, value, *, depth: int = 0):
    """One field's value as logged, nested dicts and lists included."""
    if _is_secret_field(key):
        return "***" if value else value
    if key in PIX_FIELDS and isinstance(value, str):
        return value[:PIX_KEPT] + "…"
    if isinstance(value, str):
        return _mask_text(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= PHONE_AS_NUMBER_FROM:
        # A phone logged as a number (5511987654321): masked as text, when it is one.
        masked = _mask_text(str(value))
        return value if masked == str(value) else masked
    if isinstance(value, dict | list | tuple) and depth >= MAX_MASK_DEPTH:
        return "…"
    if isinstance(value, dict):
        return {k: _mask_value(k, v, depth=depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(None, item, depth=depth + 1) for item in value]
    return value


def mask_sensitive(logger, method_name, event_dict: dict) -> dict:
    """structlog processor: logs never hold API keys, secrets, full PIX codes
    or unmasked phone numbers, whichever field (or nested field) they arrive
    in, free text included (a gateway's error body, ``gateway_body``)."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _mask_value(key, value)
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
