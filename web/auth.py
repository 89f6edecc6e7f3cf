"""Authentication of the two APIs, and the limits and idempotency that hang
on the caller's identity.

- The ERP API: ``X-Billing-API-Key``; every query is scoped to the key's
  tenant; requests per key per hour are counted in the database (shared by
  all web processes); a POST may carry an ``Idempotency-Key``.
- The admin API: ``Authorization: Bearer`` with a tenant's admin token, or the
  operator's token (BILLING_ADMIN_TOKEN) plus ``X-Billing-Tenant: <name>``.
"""
from __future__ import annotations

import functools
import hmac
import ipaddress

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


def api_key_required(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
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
        if operator and token and hmac.compare_digest(token.encode(), operator.encode()):
            g.operator = True
            name = request.headers.get(TENANT_HEADER, "").strip()
            g.tenant = tenants.get_tenant(name) if name else None
        else:
            row = apikeys.authenticate_admin(token or None)
            g.operator, g.tenant = False, row.tenant
        if g.tenant is not None:
            structlog.contextvars.bind_contextvars(tenant=g.tenant.name)
        return view(*args, **kwargs)

    return wrapper


def tenant_required() -> None:
    """For an operator, the admin routes that act on one tenant need its name."""
    if g.tenant is None:
        raise Unauthorized(f"the operator token acts on one tenant here: send {TENANT_HEADER}: <tenant name>")
