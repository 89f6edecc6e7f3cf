"""What a tenant's own administrators may not decide: the operator's ceilings
on the tenant's limits, and the settings only the operator changes.

A tenant admin (admin token) may lower its limits, or raise them up to the
ceiling the operator set for the tenant (the operator token or the CLI); the
operator is not bound by the ceilings. A limit where 0 means "none"
(``daily_cap``, ``daily_message_limit``) may not be set to 0 by a tenant admin
while it has a ceiling. Lowering a ceiling does not change the values set
before: it bounds the next change.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

from billing.adapters.models import DEFAULT_API_HOURLY_LIMIT, Tenant
from billing.errors import Forbidden, InvalidRequest

#: Requests per hour per API key (the tenant's default).
API_HOURLY_LIMIT = "api_hourly_limit"
#: Contacts accepted through the API per local day.
DAILY_MESSAGE_LIMIT = "daily_message_limit"
#: Messages per local day across the tenant's instances.
DAILY_CAP = "daily_cap"
#: Requests per hour of one API key (its own limit).
KEY_HOURLY_LIMIT = "key_hourly_limit"

#: The ceiling of each limit when the operator set none for the tenant (None:
#: no ceiling). A tenant admin may not raise its keys' request rate above the
#: default until the operator allows it; the daily counts are the business's
#: own (they only slow it down) until the operator bounds them.
DEFAULT_CEILINGS: dict[str, Optional[int]] = {
    API_HOURLY_LIMIT: DEFAULT_API_HOURLY_LIMIT,
    KEY_HOURLY_LIMIT: DEFAULT_API_HOURLY_LIMIT,
    DAILY_MESSAGE_LIMIT: None,
    DAILY_CAP: None,
}

#: The limits where 0 means "no limit".
ZERO_IS_UNLIMITED = frozenset({DAILY_MESSAGE_LIMIT, DAILY_CAP})

#: The highest ceiling the operator may set (the limits' own bound).
MAX_CEILING = 10_000_000

#: Switches only the operator turns on, and why (a tenant admin may turn them off).
OPERATOR_ONLY_SETTINGS = {
    "allow_private_callbacks": "allowing callback URLs on private or loopback addresses turns our network's guard "
                               "off: only the operator (operator token with X-Billing-Tenant, or `billing tenant "
                               "update`) decides it",
}


def ceilings_of(tenant: Tenant) -> dict[str, Optional[int]]:
    """The tenant's ceiling of each limit (the operator's, else the default).

    Parameters:
      tenant: the tenant.
    """
    own = tenant.ceilings or {}
    return {name: own.get(name, default) for name, default in DEFAULT_CEILINGS.items()}


def set_ceilings(tenant: Tenant, changes: Mapping[str, Optional[int]]) -> Tenant:
    """The operator sets the tenant's ceilings; validated, nothing saved on error.

    Parameters:
      tenant: the tenant.
      changes: {limit name: highest value a tenant admin may set, or None
        for the default ceiling}; names not given keep their ceiling.

    Raises:
      InvalidRequest: an unknown limit, or a value that is not a whole number
        from 1 to MAX_CEILING.
    """
    own = dict(tenant.ceilings or {})
    for name, value in changes.items():
        if name not in DEFAULT_CEILINGS:
            raise InvalidRequest(f"unknown limit '{name}'; ceilings exist for {', '.join(DEFAULT_CEILINGS)}")
        if value is None:
            own.pop(name, None)
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CEILING:
            raise InvalidRequest(f"the ceiling of {name} must be a whole number from 1 to {MAX_CEILING}, got {value!r}")
        own[name] = value
    Tenant.update(ceilings=own).where(Tenant.id == tenant.id).execute()
    return Tenant.get_by_id(tenant.id)


def check_within(tenant: Tenant, name: str, value: Optional[int]) -> None:
    """Refuse a tenant admin's value of limit ``name`` above the tenant's ceiling.

    Parameters:
      tenant: the tenant.
      name: one of DEFAULT_CEILINGS.
      value: the value asked for (None: not changed).

    Raises:
      Forbidden: above the ceiling, or 0 ("no limit") for a limit that has one.
    """
    ceiling = ceilings_of(tenant)[name]
    if value is None or ceiling is None:
        return
    if value == 0 and name in ZERO_IS_UNLIMITED:
        raise Forbidden(f"{name} 0 (no limit) is above the ceiling of {ceiling} the operator set for this tenant")
    if value > ceiling:
        raise Forbidden(f"{name} {value} is above the ceiling of {ceiling} the operator set for this tenant")


def check_tenant_admin_settings(tenant: Tenant, changes: Mapping[str, object]) -> None:
    """Refuse the setting changes a tenant admin may not make.

    Parameters:
      tenant: the tenant.
      changes: the settings asked for (None values are not changes).

    Raises:
      Forbidden: an operator-only switch turned on, or a limit above its ceiling.
    """
    for name, why in OPERATOR_ONLY_SETTINGS.items():
        if changes.get(name):
            raise Forbidden(f"{name}: {why}")
    for name in (API_HOURLY_LIMIT, DAILY_MESSAGE_LIMIT, DAILY_CAP):
        check_within(tenant, name, changes.get(name))
