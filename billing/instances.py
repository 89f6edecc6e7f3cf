"""Which WhatsApp instances may send (active ones whose gateway is not down),
and where an instance's gateway may be.

The one definition of a healthy instance. Dispatch books slots on them,
health pauses a tenant's queues when it has none left, recovery resumes the
queues of tenants that have one again, and pacing measures the tenant's rate
from them. An instance never checked yet (``unknown``) may send: its first
failure marks it down.
"""
from __future__ import annotations

from peewee import Expression, ModelSelect

from billing.adapters import outbound
from billing.adapters.models import Instance
from billing.adapters.providers.base import DOWN
from billing.errors import InvalidRequest

#: Said after a refused gateway address, so the tenant knows who can allow it.
PRIVATE_GATEWAY_HINT = "(a gateway on a private network must be inside the operator's GATEWAY_PRIVATE_NETWORKS)"


def _may_send() -> Expression:
    """The condition on an instance row that lets it send."""
    return (Instance.is_active == True) & (Instance.health != DOWN)  # noqa: E712


def healthy_instances(*, tenant_id: int | None = None) -> ModelSelect:
    """The instances that may send now, fastest first (a query, run when read).

    Parameters:
      tenant_id: only this tenant's instances; None: every tenant's.
    """
    where = _may_send() if tenant_id is None else _may_send() & (Instance.tenant == tenant_id)
    return Instance.select().where(where).order_by(Instance.messages_per_minute.desc(), Instance.id)


def tenants_with_healthy_instances() -> ModelSelect:
    """The ids of the tenants that have at least one healthy instance (a subquery)."""
    return healthy_instances().select(Instance.tenant).order_by()


def check_gateway_url(url: str) -> str:
    """An instance's gateway URL as stored, once the outbound guard allows it:
    http:// or https://, a host that resolves, and only public addresses or
    addresses inside the operator's GATEWAY_PRIVATE_NETWORKS. Every call to
    the gateway checks again when it connects.

    Parameters:
      url: the URL as given (a trailing slash is dropped).

    Raises:
      InvalidRequest: the URL is refused, with the reason (never the address
        the host resolved to).
    """
    try:
        outbound.check_url(url, policy=outbound.gateway_policy())
    except outbound.DestinationRefused as exc:
        hint = f" {PRIVATE_GATEWAY_HINT}" if exc.reason == outbound.NOT_ALLOWED else ""
        raise InvalidRequest(f"url {exc.reason}{hint}", errors=[{"field": "url", "message": exc.reason}]) from None
    return url.rstrip("/")
