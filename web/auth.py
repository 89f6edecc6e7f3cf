"""``X-Billing-API-Key`` authentication: every query is scoped to the key's tenant."""
from __future__ import annotations

import functools

import structlog
from flask import g, request

from billing import apikeys

API_KEY_HEADER = "X-Billing-API-Key"


def api_key_required(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = apikeys.authenticate(request.headers.get(API_KEY_HEADER))
        g.api_key = key
        g.tenant = key.tenant
        structlog.contextvars.bind_contextvars(tenant=key.tenant.name)
        return view(*args, **kwargs)

    return wrapper
