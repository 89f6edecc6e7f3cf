"""Instance health: what a gateway's connection state means for the queues.

A down instance stops taking bookings. When the tenant has no other healthy
instance its running queues turn ``instance_down``; they resume on their own
when an instance comes back.
"""
from __future__ import annotations

import structlog

from billing.clock import utcnow
from billing.db import write_transaction
from billing.models import Instance, Queue
from billing.providers.base import CONNECTED, DOWN
from billing.states import QueueStatus

log = structlog.get_logger(__name__)

#: pause_reason while every instance of the tenant is down.
INSTANCE_DOWN_REASON = "Instância do WhatsApp desconectada"

#: Queue.pause_kind values the scheduler may lift on its own.
PAUSE_MANUAL = "manual"  # billing.queues.MANUAL_PAUSE
PAUSE_HOURS = "hours"
PAUSE_INSTANCE = "instance"
PAUSE_DAILY_CAP = "daily_cap"


def healthy_instances(tenant_id: int) -> int:
    return (
        Instance.select()
        .where((Instance.tenant == tenant_id) & (Instance.is_active == True) & (Instance.health != DOWN))  # noqa: E712
        .count()
    )


def pause_for_instances(tenant_id: int, *, now=None) -> int:
    """Turn the tenant's running queues ``instance_down``; returns how many."""
    now = now or utcnow()
    return (
        Queue.update(status=QueueStatus.INSTANCE_DOWN, pause_kind=PAUSE_INSTANCE, pause_reason=INSTANCE_DOWN_REASON,
                     next_dispatch_at=None, updated_at=now)
        .where((Queue.tenant == tenant_id) & Queue.status.in_(QueueStatus.RUNNING))
        .execute()
    )


def record_state(instance_id: int, state: str, *, now=None) -> list[str]:
    """Store an instance's connection state and apply it to the queues.

    Parameters:
      instance_id: the instance.
      state: ``connected``, ``connecting`` or ``down`` (connecting counts as
        down for sending: a message sent then would fail).

    Returns:
      Ids of queues that may send again (the caller enqueues their dispatch).
    """
    now = now or utcnow()
    health = CONNECTED if state == CONNECTED else DOWN
    with write_transaction():
        instance = Instance.get_or_none(Instance.id == instance_id)
        if instance is None:
            return []
        Instance.update(health=health, health_checked_at=now).where(Instance.id == instance_id).execute()
        if health == instance.health:
            return []
        log.warning("instance health changed", instance=instance.name, health=health, was=instance.health)
        if health == DOWN:
            if not healthy_instances(instance.tenant_id):
                pause_for_instances(instance.tenant_id, now=now)
            return []
        resumed = list(
            Queue.select(Queue.id).where(
                (Queue.tenant == instance.tenant_id) & (Queue.status == QueueStatus.INSTANCE_DOWN)
            )
        )
        Queue.update(status=QueueStatus.PROCESSING, pause_kind="", pause_reason="", next_dispatch_at=None,
                     updated_at=now).where(
            Queue.id.in_([q.id for q in resumed])
        ).execute()
    return [str(q.id) for q in resumed]
