"""Reading the sandbox gateway's outbox."""
from __future__ import annotations

from billing.adapters.models import SandboxMessage, Tenant
from billing.clock import as_utc_iso
from billing.tenants import get_tenant


def messages(*, tenant_name: str | None = None, limit: int | None = None) -> list[dict]:
    """Sandbox messages, oldest first.

    Parameters:
      tenant_name: only this tenant's.
      limit: only the newest ``limit`` messages.
    """
    query = SandboxMessage.select(SandboxMessage, Tenant).join(Tenant)
    if tenant_name:
        query = query.where(SandboxMessage.tenant == get_tenant(tenant_name).id)
    if limit:
        query = query.order_by(SandboxMessage.id.desc()).limit(limit)
        rows = list(reversed(list(query)))
    else:
        rows = list(query.order_by(SandboxMessage.id))
    return [
        {
            "id": row.id,
            "tenant": row.tenant.name,
            "contact_id": row.contact_id,
            "phone": row.phone,
            "text": row.text,
            "provider_message_id": row.provider_message_id,
            "sent_at": as_utc_iso(row.sent_at),
        }
        for row in rows
    ]
