"""Standard Webhooks signatures for the callbacks we send to ERPs.

Each callback carries three headers (https://www.standardwebhooks.com/):

* ``webhook-id``: the message id, the same on every retry of one message so
  the receiver can drop duplicates;
* ``webhook-timestamp``: when this attempt was signed, in integer unix
  seconds, so the receiver can refuse replays;
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256>`` of
  ``"{id}.{timestamp}.{body}"``, keyed with the base64-decoded part of a
  ``whsec_...`` secret. While a secret is being rotated the header carries
  one signature per secret, separated by spaces (``v1,abc v1,def``), and a
  receiver accepts the message if any of them matches.

:func:`verify` is the receiver's side. This module imports only the standard
library and nothing from the rest of the project, so an ERP can import it, or
copy this file, to check our callbacks.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping

#: Prefix of a signing secret; the rest is the base64 of the HMAC key.
SECRET_PREFIX = "whsec_"
#: Length of the key in a secret from :func:`generate_secret` (the spec asks
#: for 24 to 64 bytes).
SECRET_BYTES = 32
#: Header carrying the message id, stable across retries.
HEADER_ID = "webhook-id"
#: Header carrying the signing time in integer unix seconds.
HEADER_TIMESTAMP = "webhook-timestamp"
#: Header carrying the space-separated ``version,signature`` entries.
HEADER_SIGNATURE = "webhook-signature"
#: The symmetric (HMAC-SHA256) signature version; entries with any other
#: version ("v1a" is asymmetric) are skipped when verifying.
SIGNATURE_VERSION = "v1"
#: How far, in seconds, a timestamp may be from the receiver's clock, either
#: way, before the message is refused as a replay (or from a broken clock).
DEFAULT_TOLERANCE_SECONDS = 300

# Unix seconds, written as the spec writes them: digits only, no sign, no
# fraction.
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


class InvalidSignature(Exception):
    """A callback that must not be trusted; ``str(exc)`` says why.

    The reasons: a missing header, a malformed or out-of-tolerance timestamp,
    no signature matching the body, or a secret that is not a valid
    ``whsec_`` secret.
    """


def generate_secret() -> str:
    """Make a new signing secret.

    Returns:
      ``whsec_`` followed by the base64 of :data:`SECRET_BYTES` random bytes
      from :mod:`secrets`.
    """
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _key(secret: str) -> bytes:
    """Decode the HMAC key from a secret.

    The ``whsec_`` prefix is optional, as in the reference libraries, so a key
    copied without it still works.

    Parameters:
      secret: ``whsec_<base64>``.

    Raises:
      ValueError: if the secret is not text, is not valid base64, or decodes
        to no bytes.
    """
    if not isinstance(secret, str):
        raise ValueError(f"secret must be text, got {type(secret).__name__}")
    encoded = secret[len(SECRET_PREFIX) :] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"secret is not {SECRET_PREFIX} followed by base64: {exc}") from None
    if not key:
        raise ValueError("secret has an empty key")
    return key


def _as_bytes(body: bytes | str) -> bytes:
    """The body as sent on the wire; text is encoded as UTF-8."""
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def _signature(*, key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Base64 HMAC-SHA256 of ``"{msg_id}.{timestamp}.{body}"``."""
    # The body is appended as bytes, not decoded, so a body that is not valid
    # UTF-8 is still signed exactly as sent.
    content = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode("ascii")


def sign(*, secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """Sign one attempt of a message.

    Parameters:
      secret: the endpoint's ``whsec_`` secret.
      msg_id: the message id (``webhook-id``).
      timestamp: the attempt's unix time in whole seconds.
      body: the exact body that is sent; text is encoded as UTF-8.

    Returns:
      ``"v1,<base64 signature>"``, one entry of the ``webhook-signature``
      header.

    Raises:
      ValueError: if the secret is malformed.
      TypeError: if the timestamp is not an int: ``1614265330.0`` would be
        signed as ``"1614265330.0"`` and never verify.
    """
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise TypeError(f"timestamp must be int unix seconds, got {type(timestamp).__name__}")
    signature = _signature(key=_key(secret), msg_id=msg_id, timestamp=timestamp, body=_as_bytes(body))
    return f"{SIGNATURE_VERSION},{signature}"


def headers_for(*, secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """Build the three Standard Webhooks headers of one delivery attempt.

    Parameters:
      secret: the endpoint's ``whsec_`` secret.
      msg_id: the message id; pass the same id on every retry.
      body: the exact body that is sent.
      timestamp: unix seconds; defaults to now. Each retry is signed again
        with its own time, so a retry is not refused as too old.

    Returns:
      ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``.

    Raises:
      ValueError: if the secret is malformed.
    """
    if timestamp is None:
        timestamp = int(time.time())
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: sign(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body),
    }


def verify(
    *,
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: int | None = None,
) -> None:
    """Check that a callback was signed with ``secret`` and is recent.

    Parameters:
      secret: the ``whsec_`` secret shared with the sender.
      headers: the request headers; names are matched case-insensitively.
      body: the raw request body, exactly as received (not re-serialized JSON).
      tolerance: how many seconds the timestamp may be from ``now``, either
        way.
      now: the receiver's unix time; defaults to the clock. Tests pass it.

    Raises:
      InvalidSignature: if the secret is malformed, a header is missing, the
        timestamp is malformed, too old or too new, or no ``v1`` signature in
        the header matches.
      ValueError: if ``tolerance`` is negative.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 seconds, got {tolerance}")
    try:
        key = _key(secret)
    except ValueError as exc:
        raise InvalidSignature(f"bad secret: {exc}") from None

    # HTTP header names are case-insensitive; frameworks differ in the case
    # they hand over ("Webhook-Id", "WEBHOOK-ID").
    lowered = {name.lower(): value for name, value in headers.items()}
    for name in (HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE):
        if not (lowered.get(name) or "").strip():
            raise InvalidSignature(f"missing header {name}")
    msg_id = lowered[HEADER_ID]
    timestamp_text = lowered[HEADER_TIMESTAMP].strip()

    if not _TIMESTAMP.fullmatch(timestamp_text):
        raise InvalidSignature(f"invalid {HEADER_TIMESTAMP} {timestamp_text!r}: expected integer unix seconds")
    timestamp = int(timestamp_text)
    if now is None:
        now = int(time.time())
    if timestamp < now - tolerance:
        raise InvalidSignature(f"timestamp too old: {now - timestamp}s before now, tolerance {tolerance}s")
    if timestamp > now + tolerance:
        raise InvalidSignature(f"timestamp too new: {timestamp - now}s after now, tolerance {tolerance}s")

    expected = _signature(key=key, msg_id=msg_id, timestamp=timestamp, body=_as_bytes(body)).encode("ascii")
    # During a rotation there is one entry per secret; any one will do.
    for entry in lowered[HEADER_SIGNATURE].split():
        version, _, signature = entry.partition(",")
        # Constant-time, so the time taken does not leak how much of a forged
        # signature was right.
        if version == SIGNATURE_VERSION and hmac.compare_digest(signature.encode("utf-8"), expected):
            return
    raise InvalidSignature(f"no matching {SIGNATURE_VERSION} signature in {HEADER_SIGNATURE}")
