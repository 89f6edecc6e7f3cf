"""``Idempotency-Key`` on POSTs, as Stripe does it: the same key with the same
request replays the first answer; the same key with another request is a 422;
a retry while the first is still running is a 409. Keys are scoped to the API
key and kept for a day."""
from __future__ import annotations

import hashlib
from datetime import timedelta

import peewee
from flask import Response, request

from billing.clock import utcnow
from billing.db import write_transaction
from billing.errors import BillingError, Conflict, InvalidRequest
from billing.models import ApiKey, IdempotencyRecord
from web.errors import error_response

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255

#: How long a key is remembered; after that it may be used again.
RETENTION = timedelta(hours=24)

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
    with write_transaction():
        IdempotencyRecord.delete().where(
            (IdempotencyRecord.api_key == api_key.id) & (IdempotencyRecord.key == key)
            & (IdempotencyRecord.created_at < now - RETENTION)
        ).execute()
        try:
            with write_transaction():
                IdempotencyRecord.create(api_key=api_key.id, key=key, request_hash=fingerprint, created_at=now)
            first = True
        except peewee.IntegrityError:
            first = False
    if not first:
        record = IdempotencyRecord.get((IdempotencyRecord.api_key == api_key.id) & (IdempotencyRecord.key == key))
        if record.request_hash != fingerprint:
            raise InvalidRequest(f"{HEADER} '{key}' was already used with a different request")
        if record.status_code is None:
            raise Conflict(f"a request with {HEADER} '{key}' is still being processed; retry later")
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
    IdempotencyRecord.update(status_code=response.status_code, response_body=response.get_data(as_text=True)).where(
        (IdempotencyRecord.api_key == api_key.id) & (IdempotencyRecord.key == key)
    ).execute()
    return response


def _forget(api_key: ApiKey, key: str) -> None:
    IdempotencyRecord.delete().where((IdempotencyRecord.api_key == api_key.id) & (IdempotencyRecord.key == key)).execute()
