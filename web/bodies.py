"""Reading a request: its body bounded, whether or not it came chunked, and
parsed by billing.bodies (JSON, bounded depth, storable text); its headers
and path free of NUL characters."""
from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from billing.bodies import MalformedBody, TextPolicy, read_json

#: Bodies above this are refused with 413. 10,000 contacts with every field
#: filled stay below 16 MiB.
MAX_BODY_BYTES = 16 * 1024 * 1024

#: What the app lets werkzeug read: one byte more than we accept, so a body
#: sent chunked (no Content-Length), which werkzeug cuts at this size without
#: an error, shows that it was longer than MAX_BODY_BYTES.
READ_LIMIT_BYTES = MAX_BODY_BYTES + 1


def raw_body() -> bytes:
    """The request's body, read once and cached.

    Raises:
      RequestEntityTooLarge: it is longer than MAX_BODY_BYTES (a body with a
        Content-Length over the limit is refused by werkzeug before it is read).
    """
    data = request.get_data(cache=True)
    if len(data) > MAX_BODY_BYTES:
        raise RequestEntityTooLarge()
    return data


def json_body(*, text: TextPolicy = "refuse", require_json_type: bool = True) -> Any:
    """The request's body as JSON.

    Parameters:
      text: what to do with a NUL or a lone surrogate in a string
        (:func:`billing.bodies.read_json`): ``refuse`` for callers' bodies,
        ``clean`` for gateways'.
      require_json_type: refuse a body whose Content-Type is not JSON
        (gateways are not asked for one).

    Raises:
      MalformedBody: not JSON (400).
      RequestEntityTooLarge: over MAX_BODY_BYTES (413).
      InvalidRequest: text or numbers unfit to store (422).
    """
    if require_json_type and not request.is_json:
        raise MalformedBody("the body must be JSON (Content-Type: application/json)")
    return read_json(raw_body(), text=text)


def refuse_nul() -> None:
    """Refuse a request whose path or headers hold a NUL character: they reach
    queries (a tenant's name, a key's prefix, an Idempotency-Key), and
    PostgreSQL cannot compare text holding one. Run before every request.

    Raises:
      BadRequest: naming the header, or the path (400).
    """
    if "\x00" in request.path:
        raise BadRequest("the path must not contain NUL characters")
    for name, value in request.headers.items():
        if "\x00" in value:
            raise BadRequest(f"header {name} must not contain NUL characters")
