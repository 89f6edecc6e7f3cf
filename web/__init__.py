"""The HTTP shim: an app factory, a blueprint, JSON errors."""
from __future__ import annotations

import re
import time
import uuid
from typing import Protocol

import structlog
from flask import Flask, g, request

from billing.config import Settings
from billing.db import database
from web.api import PREFIXES, bp as api_bp
from web.errors import rate_headers, register_error_handlers
from web.webhooks import bp as webhooks_bp
from web.admin import bp as admin_bp
from web.docs import bp as docs_bp

log = structlog.get_logger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"

#: On every response: no sniffing, no framing, no referrer, no caching, and a
#: policy that lets a JSON answer load nothing.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Cross-Origin-Resource-Policy": "same-origin",
}

#: The docs page uses its own inline styles, nothing else.
DOCS_PATH = "/docs"
DOCS_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"

#: A caller's X-Request-ID is kept when it looks like an id (it ends up in logs).
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

#: Webhook URLs carry the instance's secret: never in a log line.
_WEBHOOK_SECRET_PATH = re.compile(r"^(/webhooks/evolution/\d+/).+$")


def _request_id(given: str) -> str:
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def mask_path(path: str) -> str:
    return _WEBHOOK_SECRET_PATH.sub(r"\1***", path)


#: Bodies above this are refused with 413 before being read. 10,000 contacts
#: with every field filled stay below 16 MiB.
MAX_BODY_BYTES = 16 * 1024 * 1024


class Jobs(Protocol):
    """What the web shim hands to the broker (``tasks.jobs`` in production;
    tests pass a recorder)."""

    def start_queue(self, queue_id: str) -> None: ...

    def callbacks(self, delivery_ids: list[str]) -> None: ...

    def auto_replies(self, inbound_ids: list[int]) -> None: ...


def create_app(settings: Settings | None = None, *, jobs: Jobs | None = None) -> Flask:
    """Build the Flask app.

    Parameters:
      settings: process settings (default: from the environment).
      jobs: where work is enqueued (default: ``tasks.jobs``, the configured broker).
    """
    settings = settings or Settings.from_env()
    if jobs is None:
        import tasks  # declares the actors on the configured broker

        jobs = tasks.jobs
    app = Flask(__name__, static_folder=None)  # an API: no static files to serve
    app.config.update(SETTINGS=settings, JOBS=jobs, MAX_CONTENT_LENGTH=MAX_BODY_BYTES)
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    app.url_map.strict_slashes = False

    for index, prefix in enumerate(PREFIXES):
        app.register_blueprint(api_bp, url_prefix=prefix, name=f"api{index}")
    app.register_blueprint(webhooks_bp)
    app.register_blueprint(docs_bp)
    app.register_blueprint(admin_bp)

    @app.before_request
    def _open():
        database.connect(reuse_if_open=True)
        g.started = time.perf_counter()
        g.request_id = _request_id(request.headers.get(REQUEST_ID_HEADER, ""))
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.request_id)

    @app.after_request
    def _headers(response):
        response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
        response.headers.update(SECURITY_HEADERS)
        if request.path == DOCS_PATH:
            response.headers["Content-Security-Policy"] = DOCS_CSP
        usage = g.get("rate_usage")
        if usage is not None:
            response.headers.update(rate_headers(limit=usage.limit, remaining=usage.remaining, reset_at=usage.reset_at))
        log.info("request", method=request.method, path=mask_path(request.path), status=response.status_code,
                 ms=round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 1))
        return response

    @app.teardown_request
    def _close(exc):
        if not database.is_closed():
            database.close()

    @app.get("/health")
    def health():
        database.execute_sql("SELECT 1")
        return {"status": "ok"}

    register_error_handlers(app)
    return app
