"""Tenants (the businesses that send) and their WhatsApp instances."""
from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import peewee

from billing.errors import Conflict, InvalidRequest, NotFound
from billing.models import DEFAULT_TIMEZONE, Instance, Tenant
from billing.providers import check_provider

#: Highest pace an instance may be given (messages per minute). Far above what
#: an unofficial gateway survives; it exists to catch typos, and tests use it.
MAX_MESSAGES_PER_MINUTE = 60_000


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(f"unknown time zone '{name}' (use an IANA name such as America/Sao_Paulo)") from None
    return name


def create_tenant(name: str, *, timezone: str = DEFAULT_TIMEZONE) -> Tenant:
    """Create a tenant.

    Parameters:
      name: unique name.
      timezone: IANA zone in which "today" and business hours are read.
    """
    name = (name or "").strip()
    if not name:
        raise InvalidRequest("tenant name is empty")
    if Tenant.get_or_none(Tenant.name == name) is not None:
        raise Conflict(f"tenant '{name}' already exists")
    return Tenant.create(name=name, timezone=check_timezone(timezone))


def get_tenant(name: str) -> Tenant:
    tenant = Tenant.get_or_none(Tenant.name == name)
    if tenant is None:
        raise NotFound(f"no tenant named '{name}'")
    return tenant


def check_rate(value: float) -> float:
    if not 0 < value <= MAX_MESSAGES_PER_MINUTE:
        raise InvalidRequest(f"messages per minute must be between 0 and {MAX_MESSAGES_PER_MINUTE}, got {value}")
    return float(value)


def create_instance(
    tenant: Tenant,
    *,
    name: str,
    provider: str,
    url: str = "",
    token: str = "",
    messages_per_minute: float | None = None,
    options: dict | None = None,
) -> Instance:
    """Register a WhatsApp instance (a number behind a gateway).

    Parameters:
      tenant: the owner.
      name: unique per tenant; for Evolution it is the instance name, for WAHA the session.
      provider: ``sandbox``, ``evolution`` or ``waha``.
      url: the gateway's base URL (not used by sandbox).
      token: the gateway's API key.
      messages_per_minute: the pace of this number.
      options: adapter options.
    """
    check_provider(provider)
    name = (name or "").strip()
    if not name:
        raise InvalidRequest("instance name is empty")
    if provider != "sandbox" and not url:
        raise InvalidRequest(f"a {provider} instance needs --url")
    fields = dict(tenant=tenant, name=name, provider=provider, url=url.rstrip("/"), token=token, options=options or {})
    if messages_per_minute is not None:
        fields["messages_per_minute"] = check_rate(messages_per_minute)
    try:
        return Instance.create(**fields)
    except peewee.IntegrityError:
        raise Conflict(f"tenant '{tenant.name}' already has an instance named '{name}'") from None


def sending_instances(tenant_id: int) -> list[Instance]:
    """The tenant's instances that may send now, fastest first."""
    return list(
        Instance.select()
        .where((Instance.tenant == tenant_id) & (Instance.is_active == True) & (Instance.health != "down"))  # noqa: E712
        .order_by(Instance.messages_per_minute.desc(), Instance.id)
    )
