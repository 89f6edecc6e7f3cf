"""The HTTP shim: an app factory, a blueprint, JSON errors."""
from __future__ import annotations

import uuid
from typing import Callable

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


def create_app(
    settings: Settings | None = None,
    *,
    start_queue: Callable[[str], None] | None = None,
    enqueue_callbacks: Callable[[list[str]], None] | None = None,
) -> Flask:
    """Build the Flask app.

    Parameters:
      settings: process settings (default: from the environment).
      start_queue: enqueues a queue's dispatch; default ``tasks.start_queue``.
      enqueue_callbacks: hands callback deliveries to the broker; default
        ``tasks.enqueue_callbacks``.
    """
    settings = settings or Settings.from_env()
    if start_queue is None or enqueue_callbacks is None:
        import tasks  # declares the actors on the configured broker

        start_queue = start_queue or tasks.start_queue
        enqueue_callbacks = enqueue_callbacks or tasks.enqueue_callbacks
    app = Flask(__name__)
    app.config.update(
        SETTINGS=settings, START_QUEUE=start_queue, ENQUEUE_CALLBACKS=enqueue_callbacks,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
    )
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
