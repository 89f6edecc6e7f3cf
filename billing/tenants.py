"""Tenants (the businesses that send) and their WhatsApp instances."""
from __future__ import annotations

import secrets
from datetime import date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import peewee

from billing.adapters.db import write_transaction
from billing.adapters.models import DEFAULT_TIMEZONE, Instance, Tenant
from billing.adapters.providers import check_options, provider_of
from billing.bodies import check_fits
from billing.domain import signing
from billing.domain.hours import InvalidSchedule, parse_holidays, parse_hours
from billing.errors import Conflict, InvalidRequest, NotFound
from billing.instances import check_gateway_url

#: Highest pace an instance may be given (messages per minute). Far above what
#: an unofficial gateway survives; it exists to catch typos, and tests use it.
MAX_MESSAGES_PER_MINUTE = 60_000


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(f"unknown time zone '{name}' (use an IANA name such as America/Sao_Paulo)") from None
    return name


def create_tenant(name: str, *, timezone: str = DEFAULT_TIMEZONE, **settings) -> Tenant:
    """Create a tenant.

    Parameters:
      name: unique name.
      timezone: IANA zone in which "today" and business hours are read.
      settings: any setting :func:`update_tenant` takes.
    """
    name = (name or "").strip()
    if not name:
        raise InvalidRequest("tenant name is empty")
    with write_transaction():
        if Tenant.get_or_none(Tenant.name == name) is not None:
            raise Conflict(f"tenant '{name}' already exists")
        tenant = Tenant.create(name=name, timezone=check_timezone(timezone), callback_secret=signing.generate_secret())
        return update_tenant(tenant, **settings)


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
    **pace,
) -> Instance:
    """Register a WhatsApp instance (a number behind a gateway).

    Parameters:
      tenant: the owner.
      name: unique per tenant; for Evolution it is the instance name, for WAHA the session.
      provider: a registered provider's name (``sandbox``, ``evolution``, ``waha``...).
      url: the gateway's base URL (not used by providers that call no gateway).
      token: the gateway's API key.
      messages_per_minute: the pace of this number.
      options: adapter options, validated against the provider's option schema.
      pace: any pace setting :func:`update_instance` takes.
    """
    declared = provider_of(provider)
    name = (name or "").strip()
    if not name:
        raise InvalidRequest("instance name is empty")
    if declared.needs_url and not url:
        raise InvalidRequest(f"a {provider} instance needs --url")
    url = check_gateway_url(url) if url else ""  # the outbound guard: where a gateway may be
    options = check_options(provider, options)
    fields = {
        "tenant": tenant, "name": name, "provider": provider, "url": url.rstrip("/"), "token": token, "options": options,
        "webhook_secret": secrets.token_urlsafe(WEBHOOK_SECRET_BYTES),
    }
    if messages_per_minute is not None:
        fields["messages_per_minute"] = check_rate(messages_per_minute)
    with write_transaction():
        try:
            instance = Instance.create(**fields)
        except peewee.IntegrityError:
            raise Conflict(f"tenant '{tenant.name}' already has an instance named '{name}'") from None
        return update_instance(instance, **pace)


#: Random bytes of an instance's webhook secret.
WEBHOOK_SECRET_BYTES = 24

#: Bounds of the tenant's max_attempts setting.
MAX_ATTEMPTS_RANGE = (1, 20)

#: Caps and limits stop well below the database's 32-bit integers.
MAX_COUNT = 10_000_000

#: Longest interval or rest an instance may be given (seconds).
SECONDS_PER_DAY = 86_400


def _non_negative_int(value, *, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise InvalidRequest(f"{name} must be a whole number from 0 to {MAX_COUNT}, got {value!r}")
    return value


def _positive_seconds(value, *, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= SECONDS_PER_DAY:
        raise InvalidRequest(f"{name} must be a number of seconds above 0 and at most {SECONDS_PER_DAY}, got {value!r}")
    return float(value)


def update_tenant(tenant: Tenant, **changes) -> Tenant:
    """Change tenant settings; each value is validated, nothing is saved on error.

    Parameters:
      tenant: the tenant.
      changes: any of ``timezone``, ``business_hours`` ("mon-fri 08:00-18:00,
        sat 08:00-12:00" or "always"), ``holidays`` ("BR", "BR-SP", "none"),
        ``extra_holidays`` (ISO dates), ``recipient_timezone`` (bool),
        ``daily_cap`` (0: none), ``max_attempts``.
    """
    fields = {}
    for key, value in changes.items():
        if value is None:
            continue
        try:
            if key == "timezone":
                fields[key] = check_timezone(value)
            elif key == "business_hours":
                # Its normal form may be longer than what was typed: it must still fit the column.
                fields[key] = check_fits(parse_hours(value).describe(), limit=Tenant.business_hours.max_length, field=key)
            elif key == "holidays":
                country, subdivision = parse_holidays(value)
                fields[key] = "none" if country is None else "-".join(p for p in (country, subdivision) if p)
            elif key == "extra_holidays":
                fields[key] = sorted({_iso_date(d) for d in value})
            elif key in ("recipient_timezone", "allow_private_callbacks", "auto_reply"):
                fields[key] = bool(value)
            elif key in ("daily_cap", "daily_message_limit"):
                fields[key] = _non_negative_int(value, name=key.replace("_", " "))
            elif key == "api_hourly_limit":
                if _non_negative_int(value, name="API hourly limit") < 1:
                    raise InvalidRequest("API hourly limit must be at least 1")
                fields[key] = value
            elif key == "max_attempts":
                low, high = MAX_ATTEMPTS_RANGE
                if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                    raise InvalidRequest(f"max attempts must be between {low} and {high}, got {value!r}")
                fields[key] = value
            else:
                raise InvalidRequest(f"unknown tenant setting '{key}'")
        except InvalidSchedule as exc:
            raise InvalidRequest(str(exc)) from None
    if fields:
        Tenant.update(**fields).where(Tenant.id == tenant.id).execute()
    return Tenant.get_by_id(tenant.id)


def _iso_date(value) -> str:
    try:
        return date.fromisoformat(str(value).strip()).isoformat()
    except ValueError:
        raise InvalidRequest(f"holiday dates must be YYYY-MM-DD, got '{value}'") from None


def update_instance(instance: Instance, **changes) -> Instance:
    """Change an instance's pace or connection; validated, nothing saved on error.

    Parameters:
      instance: the instance.
      changes: any of ``messages_per_minute``, ``min_interval``,
        ``max_interval`` (seconds), ``rest_every`` (messages, 0: never),
        ``rest_seconds``, ``daily_cap`` (0: none), ``warmup_days`` (0: none),
        ``url``, ``token``, ``is_active``, ``options`` (replaces every
        option; validated against the provider's option schema).
    """
    fields = {}
    for key, value in changes.items():
        if value is None:
            continue
        if key == "messages_per_minute":
            fields[key] = check_rate(value)
        elif key in ("min_interval", "max_interval"):
            fields[key] = _positive_seconds(value, name=key.replace("_", " "))
        elif key == "rest_seconds":
            fields[key] = 0.0 if value == 0 else _positive_seconds(value, name="rest seconds")
        elif key in ("rest_every", "daily_cap", "warmup_days"):
            fields[key] = _non_negative_int(value, name=key.replace("_", " "))
        elif key == "url":
            fields[key] = check_gateway_url(str(value)) if value else ""
        elif key == "token":
            fields[key] = str(value)
        elif key == "is_active":
            fields[key] = bool(value)
        elif key == "options":
            fields[key] = check_options(instance.provider, value)
        else:
            raise InvalidRequest(f"unknown instance setting '{key}'")
    low = fields.get("min_interval", instance.min_interval)
    high = fields.get("max_interval", instance.max_interval)
    if low is not None and high is not None and low > high:
        raise InvalidRequest(f"min interval ({low:g}s) is above max interval ({high:g}s)")
    if fields:
        Instance.update(**fields).where(Instance.id == instance.id).execute()
    return Instance.get_by_id(instance.id)


def get_instance(tenant: Tenant, name: str) -> Instance:
    instance = Instance.get_or_none((Instance.tenant == tenant.id) & (Instance.name == name))
    if instance is None:
        raise NotFound(f"tenant '{tenant.name}' has no instance named '{name}'")
    return instance


def rotate_callback_secret(tenant: Tenant) -> str:
    """A new callback signing secret for the tenant; returns it."""
    secret = signing.generate_secret()
    Tenant.update(callback_secret=secret).where(Tenant.id == tenant.id).execute()
    return secret
