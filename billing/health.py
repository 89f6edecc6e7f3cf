"""Instance health: what a gateway's connection state means for the queues.

Each instance keeps its ``health`` and, when down, a ``health_reason`` an
operator can act on ("gateway rejected the API key", "session is STOPPED").
A down instance stops taking bookings. When the tenant has no other healthy
instance its running queues turn ``instance_down``; they resume on their own
when an instance comes back.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from peewee import Expression

from billing import transitions
from billing.adapters.db import write_transaction
from billing.adapters.models import Instance, Queue
from billing.adapters.providers import gateway_for
from billing.adapters.providers.base import CONNECTED, CONNECTING, DOWN, ConnectionStatus, GatewayError
from billing.adapters.providers.http import shorten
from billing.clock import utcnow
from billing.domain.states import QueueStatus
from billing.instances import healthy_instances
from billing.queues import resume_queues

log = structlog.get_logger(__name__)

#: pause_reason while every instance of the tenant is down.
INSTANCE_DOWN_REASON = "Instância do WhatsApp desconectada"

#: A repeated, unchanged state is written at most this often (it only
#: refreshes health_checked_at); bursts of identical events in between cost no write.
UNCHANGED_WRITE_INTERVAL = timedelta(seconds=5)
#: health_reason when the caller gives none.
DEFAULT_REASONS = {
    CONNECTING: "the gateway reports the instance connecting, not connected",
    DOWN: "the gateway reports the instance down",
}

#: Queue.pause_kind values the scheduler may lift on its own.
PAUSE_MANUAL = "manual"  # billing.queues.MANUAL_PAUSE
PAUSE_HOURS = "hours"
PAUSE_INSTANCE = "instance"
PAUSE_DAILY_CAP = "daily_cap"


def pause_for_instances(*, where: Expression, now: datetime) -> int:
    """Turn the running queues matching ``where`` ``instance_down`` (their
    tenant has no healthy instance); they resume when one comes back.

    Parameters:
      where: which queues (a tenant's, or the one dispatch found without an instance).
      now: the time of the change (naive UTC).

    Returns:
      How many queues stopped.
    """
    return len(transitions.move_queues(transitions.INSTANCE_DOWN, where, now=now, pause_kind=PAUSE_INSTANCE,
                                       pause_reason=INSTANCE_DOWN_REASON, resume_at=None))


def record_state(instance_id: int, state: str, *, reason: str = "", now: datetime | None = None) -> list[str]:
    """Store an instance's connection state (and why it is down) and apply it to the queues.

    Gateways repeat themselves (a never-paired Evolution instance posts ~35
    ``connection.update`` a second): when neither the health nor the reason
    changed and the last check is recent, nothing is written at all. A change
    writes once and logs one warning line.

    Parameters:
      instance_id: the instance.
      state: ``connected``, ``connecting`` or ``down`` (connecting counts as
        down for sending: a message sent then would fail).
      reason: why it is not connected, for the operator (``health_reason``);
        ignored when connected. "" gives a generic reason.
      now: the time of the observation (naive UTC); default now.

    Returns:
      Ids of queues that may send again (the caller enqueues their dispatch).
    """
    now = now or utcnow()
    health = CONNECTED if state == CONNECTED else DOWN
    reason = "" if health == CONNECTED else shorten(reason or DEFAULT_REASONS.get(state, DEFAULT_REASONS[DOWN]))
    seen = Instance.select(Instance.health, Instance.health_reason, Instance.health_checked_at).where(
        Instance.id == instance_id
    ).first()
    # Read outside the write transaction: a repeated state costs one SELECT, not a write lock.
    if seen is None or _unchanged(seen, health=health, reason=reason, now=now):
        return []
    with write_transaction():
        instance = Instance.get_or_none(Instance.id == instance_id)
        if instance is None:
            return []
        changed = (instance.health, instance.health_reason) != (health, reason)
        Instance.update(health=health, health_reason=reason, health_checked_at=now).where(
            Instance.id == instance_id
        ).execute()
    # The queues change in a transaction of their own: holding the instance
    # row while waiting for a queue row would deadlock with dispatch, which
    # locks the queue row first and the instance rows after.
    if not changed:
        return []
    log.warning("instance health changed", instance=instance.name, health=health, reason=reason, was=instance.health)
    if health == instance.health:
        return []  # only the reason changed: the queues are where they should be
    if health == DOWN:
        if not healthy_instances(tenant_id=instance.tenant_id).exists():
            pause_for_instances(where=Queue.tenant == instance.tenant_id, now=now)
        return []
    return resume_queues(where=(Queue.tenant == instance.tenant_id) & (Queue.status == QueueStatus.INSTANCE_DOWN),
                         now=now)


def _unchanged(seen: Instance, *, health: str, reason: str, now: datetime) -> bool:
    """Whether storing (health, reason) at ``now`` would change nothing worth a write."""
    if (seen.health, seen.health_reason) != (health, reason) or seen.health_checked_at is None:
        return False
    return timedelta(0) <= now - seen.health_checked_at < UNCHANGED_WRITE_INTERVAL


def check(instance: Instance, *, now: datetime | None = None) -> list[str]:
    """Ask the instance's gateway for its connection state and record it with its reason.

    Never raises for a gateway problem: a gateway that cannot be asked, or an
    adapter that fails, makes the instance ``down`` with a short reason.

    Parameters:
      instance: the instance to check (the caller skips inactive ones).
      now: the time of the check (naive UTC); default now.

    Returns:
      Ids of queues that may send again (the caller enqueues their dispatch).
    """
    try:
        status = gateway_for(instance).connection_status()
    except GatewayError as exc:
        status = ConnectionStatus(DOWN, exc.reason)
    except Exception as exc:  # an adapter bug must not stop the other instances' checks
        log.warning("health check failed", instance=instance.name, error=type(exc).__name__)
        status = ConnectionStatus(DOWN, f"health check failed: {type(exc).__name__}")
    return record_state(instance.id, status.state, reason=status.reason, now=now)
