"""Every error is JSON ``{success: false, message, errors?}``: never an HTML
page, never a stack trace, never a 500 for bad input.

A database that cannot answer (down, restarting, out of connections, its
schema not upgraded) is a 503 with Retry-After on every route, logged as one
warning line with the operator's detail; the caller is told no host and no SQL.
"""
from __future__ import annotations

import calendar

import structlog
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from billing.errors import BillingError, ServiceUnavailable, database_problem
from billing.limits import RateLimited

log = structlog.get_logger(__name__)


def error_response(status: int, message: str, *, errors=None, **extra):
    body = {"success": False, "message": message, **extra}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    return response


def rate_headers(*, limit: int, remaining: int, reset_at) -> dict:
    """X-RateLimit-* headers: the limit, what is left, and the reset as a Unix time."""
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, remaining)),
        "X-RateLimit-Reset": str(int(calendar.timegm(reset_at.timetuple()))),
    }


def unavailable_response(problem: ServiceUnavailable):
    """503 with Retry-After for a dependency that cannot serve now; the
    operator's detail (which database, what the driver said) goes to the log,
    never to the caller."""
    log.warning("service unavailable", error=problem.detail, retry_after=problem.retry_after)
    response = error_response(503, problem.message)
    response.headers["Retry-After"] = str(problem.retry_after)
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(BillingError)
    def _domain(exc: BillingError):
        if isinstance(exc, ServiceUnavailable):
            return unavailable_response(exc)
        response = error_response(exc.http_status, exc.message, errors=exc.errors, **exc.context)
        if isinstance(exc, RateLimited):
            response.headers["Retry-After"] = str(exc.retry_after)
            response.headers.update(rate_headers(limit=exc.limit, remaining=0, reset_at=exc.reset_at))
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        messages = {
            404: "not found",
            405: "method not allowed",
            413: "request body too large",
            415: "send the body as JSON (Content-Type: application/json)",
        }
        response = error_response(exc.code or 500, messages.get(exc.code, exc.description or exc.name))
        if exc.code == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # A database that is down, restarting or not upgraded is the service's
        # state, not a bug: 503 with Retry-After, one log line, no traceback.
        problem = database_problem(exc, url=app.config["SETTINGS"].database_url)
        if problem is not None:
            return unavailable_response(problem)
        log.exception("unhandled error")
        return error_response(500, "internal error; the request id in X-Request-ID helps us find it")
