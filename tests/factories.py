"""Building tenants and their setup for tests, through the real services."""
from __future__ import annotations

from dataclasses import dataclass

from billing import apikeys, bootstrap, tenants
from billing.adapters.models import Instance, Tenant


@dataclass
class Setup:
    tenant: Tenant
    api_key: str
    instance: Instance


def make_tenant(
    name: str = "acme", *, messages_per_minute: float = 60_000, timezone: str = "America/Sao_Paulo",
    business_hours: str = "always", holidays: str = "none", pace: dict | None = None, **settings,
) -> Setup:
    """A tenant with the default templates, a fast sandbox instance and a key.
    Open at all hours and on holidays unless told otherwise, so tests do not
    depend on the clock. ``pace``: instance settings (e.g. min_interval)."""
    tenant = tenants.create_tenant(name, timezone=timezone, business_hours=business_hours, holidays=holidays, **settings)
    bootstrap.install_default_templates(tenant)
    instance = tenants.create_instance(
        tenant, name="sandbox", provider="sandbox", messages_per_minute=messages_per_minute, **(pace or {})
    )
    issued = apikeys.issue_key(tenant, name="test")
    return Setup(tenant=tenant, api_key=issued.secret, instance=instance)


def contact(phone: str = "+5511987654321", **extra) -> dict:
    base = {"nome_cliente": "João Silva", "telefone": phone, "valor": 150.0, "data_vencimento": "2025-01-15"}
    base.update(extra)
    return base


def phones(count: int, *, start: int = 0) -> list[str]:
    """``count`` distinct valid São Paulo mobile numbers."""
    return [f"+55119{(10_000_000 + start + i):08d}" for i in range(count)]


class RecordedJobs:
    """Stands in for the broker in tests of the web shim: records what it
    would have enqueued (web.Jobs)."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.delivered: list[str] = []
        self.answered: list[int] = []

    def start_queue(self, queue_id: str) -> None:
        self.started.append(queue_id)

    def callbacks(self, delivery_ids: list[str]) -> None:
        self.delivered.extend(delivery_ids)

    def auto_replies(self, inbound_ids: list[int]) -> None:
        self.answered.extend(inbound_ids)
