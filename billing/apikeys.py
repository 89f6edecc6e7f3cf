"""API keys: the secret is shown once and stored only as a hash.

A key reads ``bk_<prefix>_<secret>``. The prefix finds the row with one indexed
lookup; the SHA-256 of the whole key is then compared in constant time. A slow
password hash is not needed: the secret has 192 random bits.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from billing.clock import utcnow
from billing.errors import Forbidden, InvalidRequest, Unauthorized
from billing.models import ApiKey, Tenant
from billing.states import TemplateType

#: Every key starts with this, so a leaked one is easy to recognise in scans.
KEY_MARK = "bk"
PREFIX_BYTES = 6
SECRET_BYTES = 24


@dataclass(frozen=True)
class IssuedKey:
    """A new key. ``secret`` is the only time the full key exists."""

    api_key: ApiKey
    secret: str


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_types(raw: str | list | tuple | None) -> str:
    """Validate a list of template types; return them comma-joined."""
    if raw is None or raw == "":
        return ",".join(TemplateType.ALL)
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    types = [str(t).strip() for t in items if str(t).strip()]
    unknown = [t for t in types if t not in TemplateType.ALL]
    if unknown or not types:
        raise InvalidRequest(
            f"unknown template type(s) {', '.join(unknown) or '(none)'}; use {', '.join(TemplateType.ALL)}"
        )
    return ",".join(dict.fromkeys(types))


def issue_key(tenant: Tenant, *, name: str = "", types=None) -> IssuedKey:
    """Create a key for ``tenant``.

    Parameters:
      tenant: the owner.
      name: a label for people (e.g. "ERP principal").
      types: template types the key may send (default: all).
    """
    prefix = secrets.token_hex(PREFIX_BYTES)
    secret = f"{KEY_MARK}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    row = ApiKey.create(tenant=tenant, name=name, prefix=prefix, key_hash=_hash(secret), template_types=parse_types(types))
    return IssuedKey(api_key=row, secret=secret)


def authenticate(raw_key: str | None) -> ApiKey:
    """The active key matching ``raw_key``.

    Raises:
      Unauthorized: missing, malformed, unknown or revoked key.
    """
    if not raw_key:
        raise Unauthorized("missing API key: send it in the X-Billing-API-Key header")
    parts = raw_key.strip().split("_")
    if len(parts) < 3 or parts[0] != KEY_MARK:
        raise Unauthorized("invalid API key")
    row = ApiKey.select(ApiKey, Tenant).join(Tenant).where(ApiKey.prefix == parts[1]).first()
    if row is None or not hmac.compare_digest(row.key_hash, _hash(raw_key.strip())):
        raise Unauthorized("invalid API key")
    if row.revoked_at is not None:
        raise Unauthorized("API key revoked")
    now = utcnow()
    # Written at most once a minute per key: a busy ERP should not turn every
    # request into a write on the same row.
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        ApiKey.update(last_used_at=now).where(ApiKey.id == row.id).execute()
    return row


def check_type_allowed(api_key: ApiKey, template_type: str) -> None:
    """Raise Forbidden when ``api_key`` may not send ``template_type``."""
    if template_type not in api_key.allowed_types:
        raise Forbidden(f"this API key may not send '{template_type}' messages")
