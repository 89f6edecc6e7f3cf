"""Authentication of the two APIs, and the limits and idempotency that hang
on the caller's identity.

- The ERP API: ``X-Billing-API-Key``; every query is scoped to the key's
  tenant; requests per key per hour are counted in the database (shared by
  all web processes); a POST may carry an ``Idempotency-Key``.
- The admin API: ``Authorization: Bearer`` with a tenant's admin token, or the
  operator's token (BILLING_ADMIN_TOKEN) plus ``X-Billing-Tenant: <name>``.
- Failed authentications (both APIs and the webhooks) are counted per client
  address in the database; an address over Settings.failed_auth_limit in
  billing.limits.FAILED_AUTH_WINDOW gets 429 with Retry-After until the
  window ends, whatever it sends.
"""
from __future__ import annotations

import contextlib
import functools
import hmac
import ipaddress
from collections.abc import Iterator

import structlog
from flask import current_app, g, request

from billing import apikeys, limits, tenants
from billing.clock import utcnow
from billing.errors import Unauthorized
from web import idempotency

API_KEY_HEADER = "X-Billing-API-Key"
TENANT_HEADER = "X-Billing-Tenant"


def client_ip() -> str:
    """The caller's address: the peer, or the first untrusted hop of
    X-Forwarded-For when the peer is a trusted proxy (TRUSTED_PROXIES)."""
    peer = request.remote_addr or ""
    trusted = [ipaddress.ip_network(p, strict=False) for p in current_app.config["SETTINGS"].trusted_proxies]

    def is_trusted(address: str) -> bool:
        try:
            return any(ipaddress.ip_address(address) in net for net in trusted)
        except ValueError:
            return False

    if not trusted or not is_trusted(peer):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            return hop
    return peer


@contextlib.contextmanager
def failures_counted() -> Iterator[None]:
    """Authenticate inside: refused at once (429) while the caller's address
    is blocked, and a refusal (401) counts against the address."""
    address, limit = client_ip(), current_app.config["SETTINGS"].failed_auth_limit
    limits.check_failed_auth(address, limit=limit)
    try:
        yield
    except Unauthorized:
        if limit > 0:  # 0: the throttle is off, nothing to count
            limits.record_failed_auth(address)
        raise


def api_key_required(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        with failures_counted():
            key = apikeys.authenticate(request.headers.get(API_KEY_HEADER), client_ip=client_ip())
        g.api_key, g.tenant = key, key.tenant
        structlog.contextvars.bind_contextvars(tenant=key.tenant.name)
        now = utcnow()
        g.rate_usage = limits.consume(
            f"apikey:{key.id}", limit=key.hourly_limit or key.tenant.api_hourly_limit,
            window=limits.hour_window(now), now=now,
        )
        if request.method == "POST":
            return idempotency.run(key, lambda: view(*args, **kwargs))
        return view(*args, **kwargs)

    return wrapper


def admin_required(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer "):].strip() if header.startswith("Bearer ") else ""
        operator = current_app.config["SETTINGS"].admin_token
        with failures_counted():
            is_operator = bool(operator and token and hmac.compare_digest(token.encode(), operator.encode()))
            row = None if is_operator else apikeys.authenticate_admin(token or None)
        g.operator = is_operator
        if is_operator:
            name = request.headers.get(TENANT_HEADER, "").strip()
            g.tenant = tenants.get_tenant(name) if name else None
        else:
            g.tenant = row.tenant
        if g.tenant is not None:
            structlog.contextvars.bind_contextvars(tenant=g.tenant.name)
        return view(*args, **kwargs)

    return wrapper


def tenant_required() -> None:
    """For an operator, the admin routes that act on one tenant need its name."""
    if g.tenant is None:
        raise Unauthorized(f"the operator token acts on one tenant here: send {TENANT_HEADER}: <tenant name>")
