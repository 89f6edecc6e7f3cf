"""Reading the callback deliveries and their attempts (CLI, admin API)."""
from __future__ import annotations

from billing.adapters.models import CallbackAttempt, CallbackDelivery, Tenant
from billing.callbacks import shown_error
from billing.clock import as_utc_iso
from billing.errors import NotFound
from billing.tenants import get_tenant


def _view(row: CallbackDelivery) -> dict:
    return {
        "id": row.id,
        "tenant": row.tenant.name,
        "event": row.event,
        "url": row.url,
        "status": row.status,
        "attempts": row.attempts,
        "last_status_code": row.last_status_code,
        "last_error": shown_error(status_code=row.last_status_code, error=row.last_error),
        "created_at": as_utc_iso(row.created_at),
        "next_attempt_at": as_utc_iso(row.next_attempt_at) if row.status == "pending" else None,
        "delivered_at": as_utc_iso(row.delivered_at),
    }


def deliveries(*, tenant_name: str | None = None, tenant_id: int | None = None, status: str | None = None,
               limit: int = 50) -> list[dict]:
    """The newest deliveries, filtered.

    Parameters:
      tenant_name, tenant_id: only this tenant's.
      status: only deliveries in this status.
      limit: how many at most.
    """
    query = CallbackDelivery.select(CallbackDelivery, Tenant).join(Tenant)
    if tenant_name:
        tenant_id = get_tenant(tenant_name).id
    if tenant_id is not None:
        query = query.where(CallbackDelivery.tenant == tenant_id)
    if status:
        query = query.where(CallbackDelivery.status == status)
    return [_view(row) for row in query.order_by(CallbackDelivery.created_at.desc()).limit(limit)]


def delivery(delivery_id: str, *, tenant_id: int | None = None) -> dict:
    """One delivery with its payload and attempts (NotFound otherwise)."""
    query = CallbackDelivery.select(CallbackDelivery, Tenant).join(Tenant).where(CallbackDelivery.id == delivery_id)
    if tenant_id is not None:
        query = query.where(CallbackDelivery.tenant == tenant_id)
    row = query.first()
    if row is None:
        raise NotFound(f"no callback delivery '{delivery_id}'")
    attempts = CallbackAttempt.select().where(CallbackAttempt.delivery == row.id).order_by(CallbackAttempt.id)
    return {
        **_view(row),
        "payload": row.payload,
        "attempts_log": [
            # No HTTP answer, no duration: how long a connection took to fail tells open ports from filtered ones.
            {"attempted_at": as_utc_iso(a.attempted_at), "status_code": a.status_code,
             "error": shown_error(status_code=a.status_code, error=a.error),
             "duration_ms": a.duration_ms if a.status_code is not None else None}
            for a in attempts
        ],
    }
