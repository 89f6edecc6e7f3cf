"""The demo tenant the embedded mode starts with, so a newcomer can send at once."""
from __future__ import annotations

import json
from dataclasses import dataclass

from billing import apikeys, tenants
from billing.adapters.db import write_transaction
from billing.adapters.models import ApiKey, Tenant
from billing.adapters.providers import sandbox
from billing.clock import utcnow
from billing.domain import message_types
from billing.templates import create_template

DEMO_TENANT = "demo"
DEMO_KEY_NAME = "demo (make run)"
DEMO_INSTANCE = "sandbox"
#: Fast enough for a demo to finish while you watch; a real number needs far less.
DEMO_MESSAGES_PER_MINUTE = 120


@dataclass(frozen=True)
class Demo:
    tenant: Tenant
    api_key: str
    created: bool


def install_default_templates(tenant: Tenant) -> None:
    """Give ``tenant`` a ``Padrão`` template of every declared message type,
    with that type's default Portuguese variations."""
    for declared in message_types.MESSAGE_TYPES.values():
        create_template(
            tenant, type=declared.name, name="Padrão", variations=list(declared.default_variations), strategy="sequential"
        )


def ensure_demo() -> Demo:
    """Create the demo tenant on first start; on every start, replace its
    demo key with a fresh one (only hashes are stored, so the old secret
    cannot be shown again)."""
    with write_transaction():
        tenant = Tenant.get_or_none(Tenant.name == DEMO_TENANT)
        created = tenant is None
        if created:
            # Open at all hours so the demo works whenever it is tried; real
            # tenants start with business hours and Brazilian holidays.
            tenant = tenants.create_tenant(DEMO_TENANT, business_hours="always", holidays="none")
            tenant.settings = {"demo": True}
            tenant.save()
            install_default_templates(tenant)
            tenants.create_instance(
                tenant, name=DEMO_INSTANCE, provider=sandbox.PROVIDER.name, messages_per_minute=DEMO_MESSAGES_PER_MINUTE
            )
        ApiKey.update(revoked_at=utcnow()).where(
            (ApiKey.tenant == tenant.id) & (ApiKey.name == DEMO_KEY_NAME) & ApiKey.revoked_at.is_null()
        ).execute()
        issued = apikeys.issue_key(tenant, name=DEMO_KEY_NAME)
    return Demo(tenant=tenant, api_key=issued.secret, created=created)


def demo_curl(*, base_url: str, api_key: str, external_id: str) -> str:
    """A curl command that sends one overdue reminder through the demo tenant."""
    body = {
        "external_id": external_id,
        "contacts": [
            {
                "nome_cliente": "João Silva",
                "telefone": "+5511999999999",
                "valor": 150.0,
                "data_vencimento": "2025-01-15",
                "codigo_pix": "00020126580014br.gov.bcb.pix...",
            }
        ],
    }
    return (
        f"curl -s -X POST {base_url}/api/v1/billing/send/{message_types.OVERDUE.name} \\\n"
        f"  -H 'X-Billing-API-Key: {api_key}' \\\n"
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d '{json.dumps(body, ensure_ascii=False)}'"
    )
