"""The HTTP shim: an app factory, a blueprint, JSON errors, probes.

Two rules hold for every route:

- **Saved work is never an error.** Work is enqueued after its commit through
  :class:`AfterCommitJobs`: a broker that cannot take it is logged, and the
  scheduler's recovery dispatches the committed work once the broker is back.
- **A database that cannot answer is a 503 with Retry-After** (web/errors.py),
  including a schema that ``billing db upgrade`` has not brought up to date.
  A request opens its database connection on its first query, so routes that
  need none (``/healthz``, the docs) answer while the database is down.
"""
from __future__ import annotations

import re
import time
import uuid
from typing import Protocol

import structlog
from flask import Flask, g, jsonify, request

from billing.adapters import encryption, outbound
from billing.adapters.db import database
from billing.adapters.providers import mask_webhook_secrets
from billing.config import Settings
from billing.errors import DATABASE_RETRY_AFTER_SECONDS, SchemaNotUpgraded, database_problem, require_current_schema
from web.admin import bp as admin_bp
from web.api import PREFIXES
from web.api import bp as api_bp
from web.bodies import READ_LIMIT_BYTES, refuse_nul
from web.docs import bp as docs_bp
from web.errors import error_response, rate_headers, register_error_handlers
from web.openapi import operation
from web.responses import Liveness, Readiness
from web.webhooks import bp as webhooks_bp

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


def _request_id(given: str) -> str:
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def mask_path(path: str) -> str:
    """The request path as logged: webhook URLs carry the instance's secret,
    masked with the pattern each provider declares."""
    return mask_webhook_secrets(path)


class Jobs(Protocol):
    """What the web shim hands to the broker (``tasks.jobs`` in production;
    tests pass a recorder)."""

    def start_queue(self, queue_id: str) -> None: ...

    def callbacks(self, delivery_ids: list[str]) -> None: ...

    def auto_replies(self, inbound_ids: list[int]) -> None: ...


class AfterCommitJobs:
    """The Jobs port as the routes use it: every enqueue happens after the
    commit of the work it announces, so it must not decide the HTTP answer.

    A failed enqueue (RabbitMQ down, a publish not confirmed) is logged as one
    warning line and dropped: the database still holds the work, and the
    scheduler's recovery finds it (running queues with due contacts and no
    dispatch chain, due callback deliveries) within RECOVERY_INTERVAL_SECONDS
    of the broker's return.

    Parameters:
      jobs: the port that really enqueues (``tasks.jobs``, or a test recorder).
    """

    def __init__(self, jobs: Jobs) -> None:
        self.inner = jobs

    def start_queue(self, queue_id: str) -> None:
        self._hand_over("start_queue", queue_id, queue_id=str(queue_id))

    def callbacks(self, delivery_ids: list[str]) -> None:
        if delivery_ids:
            self._hand_over("callbacks", delivery_ids, count=len(delivery_ids))

    def auto_replies(self, inbound_ids: list[int]) -> None:
        if inbound_ids:
            self._hand_over("auto_replies", inbound_ids, count=len(inbound_ids))

    def _hand_over(self, job: str, payload, **context) -> None:
        try:
            getattr(self.inner, job)(payload)
        except Exception as exc:  # whatever the broker raised, the commit stands
            log.warning("enqueue failed after commit; the scheduler's recovery will dispatch it",
                        job=job, error=f"{exc.__class__.__name__}: {exc}"[:300], **context)


#: How long the readiness probe waits for the broker before calling it down.
BROKER_PROBE_TIMEOUT_SECONDS = 2


def broker_state(settings: Settings) -> str:
    """``ok`` when the broker takes connections, else what is wrong.

    Parameters:
      settings: BROKER_URL empty is the in-process broker, always there.
    """
    if settings.embedded_broker:
        return "ok"
    import pika  # the RabbitMQ client Dramatiq itself uses

    try:
        params = pika.URLParameters(settings.broker_url)
        params.connection_attempts = 1
        params.socket_timeout = params.stack_timeout = BROKER_PROBE_TIMEOUT_SECONDS
        pika.BlockingConnection(params).close()
    except Exception as exc:  # pika raises many kinds; any means "not ready"
        log.warning("broker unreachable", error=f"{exc.__class__.__name__}: {exc}"[:300])
        return "unreachable"
    return "ok"


def database_state(settings: Settings) -> str:
    """``ok`` when the database answers with the code's schema, else what is wrong.

    Parameters:
      settings: names the database in the log line of a failure.
    """
    try:
        require_current_schema()
    except Exception as exc:
        problem = database_problem(exc, url=settings.database_url)
        if problem is None:
            raise
        log.warning("database not ready", error=problem.detail)
        return "schema not upgraded" if isinstance(problem, SchemaNotUpgraded) else "unavailable"
    return "ok"


def create_app(settings: Settings | None = None, *, jobs: Jobs | None = None) -> Flask:
    """Build the Flask app.

    Parameters:
      settings: process settings (default: from the environment).
      jobs: where work is enqueued (default: ``tasks.jobs``, after
        ``tasks.setup`` wired logging, the database and the broker from
        ``settings``). A caller that passes its own wires the database itself.
    """
    settings = settings or Settings.from_env()
    outbound.configure(gateway_private_networks=settings.gateway_private_networks)  # where gateways may be
    if jobs is None:
        import tasks

        jobs = tasks.setup(settings=settings).jobs
    # A caller that passes its own jobs wired the database; the keys of its secrets come from the same settings.
    encryption.configure(keys=settings.keys(), database_url=settings.database_url)
    app = Flask(__name__, static_folder=None)  # an API: no static files to serve
    app.config.update(SETTINGS=settings, JOBS=AfterCommitJobs(jobs), MAX_CONTENT_LENGTH=READ_LIMIT_BYTES)
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    app.url_map.strict_slashes = False

    for index, prefix in enumerate(PREFIXES):
        app.register_blueprint(api_bp, url_prefix=prefix, name=f"api{index}")
    app.register_blueprint(webhooks_bp)
    app.register_blueprint(docs_bp)
    app.register_blueprint(admin_bp)

    app.before_request(refuse_nul)  # first: a NUL never reaches authentication's queries

    @app.before_request
    def _open():
        # No connection yet: the first query opens one (peewee's autoconnect),
        # and _close returns it, so a route that needs none never waits on a
        # database that is down.
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
        """Kept for existing probes: the database answers with the code's schema
        (503 with Retry-After otherwise)."""
        require_current_schema()
        return {"status": "ok"}

    @app.get("/healthz")
    @operation(summary="Liveness: the process answers (touches neither database nor broker)", tags=("operations",),
               response=Liveness, auth="none")
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    @operation(summary="Readiness: the database (with an upgraded schema) and the broker answer", tags=("operations",),
               response=Readiness, errors=(503,), auth="none",
               description="503 with Retry-After and the checks that failed while the database is unreachable, its "
               "schema is not upgraded (`billing db upgrade`), or the broker is unreachable.")
    def readyz():
        checks = {"database": database_state(settings), "broker": broker_state(settings)}
        failed = [f"{name} {state}" for name, state in checks.items() if state != "ok"]
        if not failed:
            return jsonify(success=True, status="ok", checks=checks)
        response = error_response(503, f"not ready: {', '.join(failed)}", checks=checks)
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response

    register_error_handlers(app)
    return app
