"""``Idempotency-Key`` on POSTs, as Stripe does it: the same key with the same
request replays the first answer; the same key with another request is a 422;
a retry while the first is still running is a 409. Keys are scoped to the API
key and kept for a day.

A first request that died before answering (its process killed, the database
lost mid-request) leaves its record unanswered; after IN_FLIGHT_TIMEOUT the
same request runs again instead of getting 409 for a day. Running again is
safe: a send whose campaign was committed answers 409 with the existing ids
(its external_id is taken).
"""
from __future__ import annotations

import hashlib
from datetime import timedelta

import peewee
import structlog
from flask import Response, request

from billing.adapters.db import write_transaction
from billing.adapters.models import ApiKey, IdempotencyRecord
from billing.clock import utcnow
from billing.errors import BillingError, Conflict, InvalidRequest, database_problem
from web.errors import error_response

log = structlog.get_logger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255

#: How long a key is remembered; after that it may be used again.
RETENTION = timedelta(hours=24)

#: A first request still unanswered this long after it started died mid-flight;
#: the same request may then run again. Longer than any request runs: gunicorn
#: kills a worker stuck for its --timeout (30 s by default) and a send of
#: 10,000 contacts takes a few seconds. Within it, a retry gets 409.
IN_FLIGHT_TIMEOUT = timedelta(seconds=60)

#: Answers worth replaying: a 5xx is not stored, so a retry runs again.
MAX_STORED_STATUS = 499


def _fingerprint() -> str:
    digest = hashlib.sha256()
    digest.update(request.method.encode())
    digest.update(request.path.encode())
    digest.update(request.get_data(cache=True))
    return digest.hexdigest()


def run(api_key: ApiKey, view):
    """Run ``view`` once per (API key, Idempotency-Key)."""
    key = request.headers.get(HEADER, "").strip()
    if not key:
        return view()
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"{HEADER} is longer than {MAX_KEY_LENGTH} characters")
    fingerprint, now = _fingerprint(), utcnow()
    this_key = (IdempotencyRecord.api_key == api_key.id) & (IdempotencyRecord.key == key)
    with write_transaction():
        expired = IdempotencyRecord.created_at < now - RETENTION
        # The same request, begun long enough ago to be dead: this one takes over.
        abandoned = (
            IdempotencyRecord.status_code.is_null() & (IdempotencyRecord.request_hash == fingerprint)
            & (IdempotencyRecord.created_at < now - IN_FLIGHT_TIMEOUT)
        )
        IdempotencyRecord.delete().where(this_key & (expired | abandoned)).execute()
        try:
            with write_transaction():
                IdempotencyRecord.create(api_key=api_key.id, key=key, request_hash=fingerprint, created_at=now)
            first = True
        except peewee.IntegrityError:
            first = False
    if not first:
        record = IdempotencyRecord.get(this_key)
        if record.request_hash != fingerprint:
            raise InvalidRequest(f"{HEADER} '{key}' was already used with a different request")
        if record.status_code is None:
            wait = max(1, int((record.created_at + IN_FLIGHT_TIMEOUT - now).total_seconds()) + 1)
            raise Conflict(f"a request with {HEADER} '{key}' is still being processed; retry in {wait} s")
        replay = Response(record.response_body, status=record.status_code, mimetype="application/json")
        replay.headers["Idempotent-Replayed"] = "true"
        return replay

    try:
        response = view()
    except Exception as exc:
        # A 4xx raised by the view is a final answer and is replayed too.
        if not isinstance(exc, BillingError) or exc.http_status > MAX_STORED_STATUS:
            _forget(api_key, key)
            raise
        response = error_response(exc.http_status, exc.message, errors=exc.errors, **exc.context)
    if response.status_code > MAX_STORED_STATUS:
        _forget(api_key, key)
        return response
    try:
        IdempotencyRecord.update(status_code=response.status_code, response_body=response.get_data(as_text=True)).where(
            this_key
        ).execute()
    except Exception as exc:
        # The work is done and committed: its answer stands. Unrecorded, the
        # key is run again after IN_FLIGHT_TIMEOUT (and a send then finds its
        # external_id taken).
        problem = database_problem(exc)
        if problem is None:
            raise
        log.warning("idempotency answer not recorded", error=problem.detail)
    return response


def _forget(api_key: ApiKey, key: str) -> None:
    IdempotencyRecord.delete().where((IdempotencyRecord.api_key == api_key.id) & (IdempotencyRecord.key == key)).execute()
