"""Building tenants and their setup for tests, through the real services."""
from __future__ import annotations

from dataclasses import dataclass

from billing import apikeys, bootstrap, tenants
from billing.models import Instance, Tenant


@dataclass
class Setup:
    tenant: Tenant
    api_key: str
    instance: Instance


def make_tenant(name: str = "acme", *, messages_per_minute: float = 60_000, timezone: str = "America/Sao_Paulo") -> Setup:
    """A tenant with the default templates, a fast sandbox instance and a key."""
    tenant = tenants.create_tenant(name, timezone=timezone)
    bootstrap.install_default_templates(tenant)
    instance = tenants.create_instance(tenant, name="sandbox", provider="sandbox", messages_per_minute=messages_per_minute)
    issued = apikeys.issue_key(tenant, name="test")
    return Setup(tenant=tenant, api_key=issued.secret, instance=instance)


def contact(phone: str = "+5511987654321", **extra) -> dict:
    base = {"nome_cliente": "João Silva", "telefone": phone, "valor": 150.0, "data_vencimento": "2025-01-15"}
    base.update(extra)
    return base


def phones(count: int, *, start: int = 0) -> list[str]:
    """``count`` distinct valid São Paulo mobile numbers."""
    return [f"+55119{(10_000_000 + start + i):08d}" for i in range(count)]
