"""The HTTP shim: an app factory, a blueprint, JSON errors."""
from __future__ import annotations

import uuid
from typing import Protocol

import structlog
from flask import Flask, g, request

from billing.config import Settings
from billing.db import database
from web.api import PREFIXES, bp as api_bp
from web.errors import register_error_handlers
from web.webhooks import bp as webhooks_bp

log = structlog.get_logger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"

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
    app = Flask(__name__)
    app.config.update(SETTINGS=settings, JOBS=jobs, MAX_CONTENT_LENGTH=MAX_BODY_BYTES)
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    app.url_map.strict_slashes = False

    for index, prefix in enumerate(PREFIXES):
        app.register_blueprint(api_bp, url_prefix=prefix, name=f"api{index}")
    app.register_blueprint(webhooks_bp)

    @app.before_request
    def _open():
        database.connect(reuse_if_open=True)
        g.request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.request_id)

    @app.after_request
    def _headers(response):
        response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
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
