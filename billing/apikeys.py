"""API keys: the secret is shown once and stored only as a hash.

A key reads ``bk_<prefix>_<secret>``. The prefix finds the row with one indexed
lookup; the SHA-256 of the whole key is then compared in constant time. A slow
password hash is not needed: the secret has 192 random bits.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime

from billing.adapters.models import AdminToken, ApiKey, Campaign, Tenant
from billing.admin_schemas import MAX_ID
from billing.clock import as_utc_iso, utcnow
from billing.domain import message_types
from billing.errors import BillingError, Conflict, DuplicateCampaign, Forbidden, InvalidRequest, NotFound, Unauthorized

#: Every key starts with this, so a leaked one is easy to recognise in scans.
KEY_MARK = "bk"
#: Admin-API tokens start with this.
ADMIN_MARK = "bat"
LABELS = {KEY_MARK: "API key", ADMIN_MARK: "admin token"}

#: The highest hourly limit a key may be given.
MAX_HOURLY_LIMIT = 10_000_000

#: last_used_at is written at most this often per key (seconds).
LAST_USED_PRECISION_SECONDS = 60
PREFIX_BYTES = 6
SECRET_BYTES = 24


@dataclass(frozen=True)
class IssuedKey:
    """A new key. ``secret`` is the only time the full key exists."""

    api_key: ApiKey
    secret: str


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_types(raw: str | list | tuple | None) -> list[str] | None:
    """Validate the message types a key may send.

    Parameters:
      raw: comma-separated names or a list of them; None or empty for every
        type.

    Returns:
      The names, each once, in the order given; None for every declared type,
      including types declared later (what the key stores as NULL).

    Raises:
      InvalidRequest: a name is not a declared type, or the list holds none.
    """
    if raw is None or raw == "":
        return None
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    types = [str(t).strip() for t in items if str(t).strip()]
    declared = message_types.names()
    unknown = [t for t in types if t not in declared]
    if unknown or not types:
        raise InvalidRequest(f"unknown template type(s) {', '.join(unknown) or '(none)'}; use {', '.join(declared)}")
    return list(dict.fromkeys(types))


def parse_networks(raw) -> list[str]:
    """Validate an IP allowlist (addresses or CIDRs); return it normalized."""
    items = raw.split(",") if isinstance(raw, str) else list(raw or [])
    networks = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise InvalidRequest(f"'{item}' is not an IP address or CIDR network") from None
    return networks


def issue_key(
    tenant: Tenant, *, name: str = "", types=None, allowed_ips=None, expires_at: datetime | None = None,
    hourly_limit: int = 0,
) -> IssuedKey:
    """Create a key for ``tenant``.

    Parameters:
      tenant: the owner.
      name: a label for people (e.g. "ERP principal").
      types: message types the key may send (default: every type, those
        declared later included).
      allowed_ips: addresses or CIDRs the key may be used from (default: any).
      expires_at: when the key stops working (naive UTC; default: never).
      hourly_limit: requests per hour (0: the tenant's default).
    """
    if isinstance(hourly_limit, bool) or not isinstance(hourly_limit, int) or not 0 <= hourly_limit <= MAX_HOURLY_LIMIT:
        raise InvalidRequest(f"hourly limit must be a whole number from 0 to {MAX_HOURLY_LIMIT}, got {hourly_limit!r}")
    prefix = secrets.token_hex(PREFIX_BYTES)
    secret = f"{KEY_MARK}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    row = ApiKey.create(
        tenant=tenant, name=name, prefix=prefix, key_hash=_hash(secret), message_types=parse_types(types),
        allowed_ips=parse_networks(allowed_ips), expires_at=expires_at, hourly_limit=hourly_limit,
    )
    return IssuedKey(api_key=row, secret=secret)


def _find(model, mark: str, raw: str | None, *, missing: str):
    """The row of ``model`` whose prefix and hash match ``raw`` (constant-time)."""
    if not raw:
        raise Unauthorized(missing)
    parts = raw.strip().split("_")
    if len(parts) < 3 or parts[0] != mark:
        raise Unauthorized(f"invalid {LABELS[mark]}")
    row = model.select(model, Tenant).join(Tenant).where(model.prefix == parts[1]).first()
    if row is None or not hmac.compare_digest(row.key_hash, _hash(raw.strip())):
        raise Unauthorized(f"invalid {LABELS[mark]}")
    if row.revoked_at is not None:
        raise Unauthorized(f"{LABELS[mark]} revoked")
    return row


def authenticate(raw_key: str | None, *, client_ip: str = "") -> ApiKey:
    """The active key matching ``raw_key``, usable from ``client_ip``.

    Raises:
      Unauthorized: missing, malformed, unknown, revoked or expired key.
      Forbidden: the key is not allowed from this address.
    """
    row = _find(ApiKey, KEY_MARK, raw_key, missing="missing API key: send it in the X-Billing-API-Key header")
    now = utcnow()
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthorized("API key expired")
    if row.allowed_ips and not _allowed(client_ip, row.allowed_ips):
        raise Forbidden("API key not allowed from this address")
    # Written at most once a minute per key: a busy ERP should not turn every
    # request into a write on the same row.
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > LAST_USED_PRECISION_SECONDS:
        ApiKey.update(last_used_at=now, last_used_ip=client_ip[:64]).where(ApiKey.id == row.id).execute()
    return row


def _allowed(client_ip: str, networks: list[str]) -> bool:
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n) for n in networks)


def issue_admin_token(tenant: Tenant, *, name: str = "") -> tuple[AdminToken, str]:
    """Create an admin-API token for ``tenant``; returns (row, secret shown once)."""
    prefix = secrets.token_hex(PREFIX_BYTES)
    secret = f"{ADMIN_MARK}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    return AdminToken.create(tenant=tenant, name=name, prefix=prefix, key_hash=_hash(secret)), secret


def authenticate_admin(raw_token: str | None) -> AdminToken:
    """The active admin token matching ``raw_token``."""
    row = _find(AdminToken, ADMIN_MARK, raw_token, missing="missing admin token: send Authorization: Bearer <token>")
    now = utcnow()
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > LAST_USED_PRECISION_SECONDS:
        AdminToken.update(last_used_at=now).where(AdminToken.id == row.id).execute()
    return row


def check_type_allowed(api_key: ApiKey, template_type: str) -> None:
    """Raise Forbidden when ``api_key`` may not send ``template_type``."""
    if template_type not in api_key.allowed_types:
        raise Forbidden(f"this API key may not send '{template_type}' messages")


def admin_token_view(token: AdminToken) -> dict:
    """An admin token as shown: never its secret, only what tells it apart.

    Parameters:
      token: the row (its tenant loaded).
    """
    return {
        "id": token.id,
        "tenant": token.tenant.name,
        "name": token.name,
        "prefix": f"{ADMIN_MARK}_{token.prefix}",
        "created_at": as_utc_iso(token.created_at),
        "last_used_at": as_utc_iso(token.last_used_at),
        "revoked_at": as_utc_iso(token.revoked_at),
    }


def list_admin_tokens(*, tenant: Tenant | None) -> list[dict]:
    """The admin tokens of ``tenant`` (None: of every tenant), oldest first.

    Parameters:
      tenant: whose tokens; None for the operator's view of every tenant.
    """
    query = AdminToken.select(AdminToken, Tenant).join(Tenant)
    if tenant is not None:
        query = query.where(AdminToken.tenant == tenant.id)
    return [admin_token_view(t) for t in query.order_by(AdminToken.id)]


def find_admin_token(*, token_id: int | None = None, prefix: str | None = None, tenant: Tenant | None) -> AdminToken:
    """One admin token by id or by prefix (``bat_...`` or its hex part).

    Parameters:
      token_id: the row id.
      prefix: or the prefix shown by the list.
      tenant: the token must be this tenant's (None: any tenant's, the operator).

    Raises:
      NotFound: no such token (another tenant's included).
    """
    if token_id is not None:
        if not 0 < token_id <= MAX_ID:  # beyond the database's ids: cannot exist
            raise NotFound("admin token not found")
        where = AdminToken.id == token_id
    else:
        where = AdminToken.prefix == (prefix or "").strip().removeprefix(f"{ADMIN_MARK}_")
    if tenant is not None:
        where &= AdminToken.tenant == tenant.id
    row = AdminToken.select(AdminToken, Tenant).join(Tenant).where(where).first()
    if row is None:
        raise NotFound("admin token not found")
    return row


def revoke_admin_token(token: AdminToken) -> dict:
    """Revoke ``token`` (from its next request on); revoking again changes nothing.

    Parameters:
      token: the row (from :func:`find_admin_token`).
    """
    AdminToken.update(revoked_at=utcnow()).where((AdminToken.id == token.id) & AdminToken.revoked_at.is_null()).execute()
    return admin_token_view(find_admin_token(token_id=token.id, tenant=None))


def scoped_duplicate(error: DuplicateCampaign, *, scope: list[str] | None) -> BillingError:
    """The 409 a key gets for an external_id already used: with the existing
    campaign's ids when the key may see it, without them when the campaign is
    of a type outside the key's scope (the key could not read or control it).

    Parameters:
      error: the duplicate found.
      scope: the key's message types (None: every type).
    """
    if scope is None:
        return error
    kind = Campaign.select(Campaign.type).where(Campaign.id == error.context.get("billing_campaign_id")).scalar()
    if kind in scope:
        return error
    return Conflict(f"{error.message}, in a campaign of a type this API key may not use")
