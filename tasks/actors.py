"""The actors. Each is thin: it calls billing/ and enqueues what that says.

Actors live on separate queues so ops can size workers per queue and a slow
queue never starves another: ``billing worker -Q send --threads 16``.
"""
from __future__ import annotations

import functools
import random
from datetime import datetime, timedelta

import dramatiq
import structlog
from peewee import InterfaceError, OperationalError

from billing import callbacks, fairness, health, inbound, recovery, sending
from billing import dispatch as dispatching  # `dispatch` is the actor below
from billing.adapters.models import CallbackDelivery, InboundMessage, Instance
from billing.adapters.providers import GatewayError
from billing.clock import utcnow
from billing.config import Settings
from tasks.registry import REGISTRY

log = structlog.get_logger(__name__)

#: Dramatiq's decorator, declaring on tasks.registry.REGISTRY: importing this
#: module sets no global broker and connects nowhere; tasks.setup() moves the
#: actors to the process's broker. (Plain ``dramatiq.actor`` would create a
#: global RabbitMQ broker at import.)
actor = functools.partial(dramatiq.actor, broker=REGISTRY)

DISPATCH_QUEUE = "dispatch"
SEND_QUEUE = "send"
#: Scheduler-driven work (recovery, health checks), off the hot queues.
MAINTENANCE_QUEUE = "maintenance"
#: Deliveries to callers' endpoints: slow receivers never hold up sends.
CALLBACKS_QUEUE = "callbacks"

#: Retries of one message at most, whatever the cause, so a bug cannot loop
#: forever; stuck contacts are found again by the scheduler's recovery.
MAX_MESSAGE_RETRIES = 20

#: A send includes the gateway's "typing..." delay, and a result the gateway
#: accepted is recorded across a database outage of up to
#: sending.RECORD_DEADLINE: give it room for both.
SEND_TIME_LIMIT_MS = int(sending.RECORD_DEADLINE.total_seconds() * 1000) + 3 * 60_000


class RetryLater(dramatiq.Retry):
    """A transient failure: Dramatiq's Retries middleware tries again, and
    logs one line, not an error with a traceback."""


class DatabaseUnavailable(RetryLater):
    """The database is restarting or unreachable: try again soon, for as long
    as an outage of minutes lasts (the message holds only ids)."""


#: What the database says while it restarts or is unreachable.
DATABASE_DOWN = (OperationalError, InterfaceError)

#: A message waits out a database outage in steps of about this long (ms,
#: jittered), so work resumes seconds after the database returns rather than
#: after an exponential backoff grown during the outage.
DATABASE_RETRY_DELAY_MS = 3_000

#: Steps of DATABASE_RETRY_DELAY_MS a message waits out at most (~15 min);
#: whatever is still stuck then is found by the scheduler's recovery.
MAX_DATABASE_RETRIES = 300


def _retry_when(retries: int, exception: Exception) -> bool:
    if isinstance(exception, DatabaseUnavailable):
        return retries <= MAX_DATABASE_RETRIES
    if retries > MAX_MESSAGE_RETRIES:
        return False
    return isinstance(exception, dramatiq.Retry)


def _first_line(exc: Exception) -> str:
    """An exception's first line (database errors run over several), bounded."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _waits_out_database_outages(fn):
    """Turn a database outage into a quiet retry (one log line), not an
    error with a traceback for every message while the database is away."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DATABASE_DOWN as exc:
            delay = int(DATABASE_RETRY_DELAY_MS * random.uniform(0.7, 1.3))
            raise DatabaseUnavailable(f"database unavailable: {_first_line(exc)}", delay=delay) from None
    return wrapper


#: What the actors read of the process settings (dispatch horizon and batch,
#: claim timeout, send retry backoff): the defaults until tasks.setup() calls
#: :func:`configure`. database_url is given only so that no default is looked
#: up in the environment; the actors do not use it.
_settings = Settings(database_url="")


@actor(queue_name=DISPATCH_QUEUE, retry_when=_retry_when, min_backoff=1_000, max_backoff=60_000)
@_waits_out_database_outages
def dispatch(queue_id: str) -> None:
    """Book the queue's next send slots and enqueue their sends."""
    plan = dispatching.plan_dispatch(
        queue_id,
        horizon=timedelta(seconds=_settings.dispatch_horizon_seconds),
        batch_size=_settings.dispatch_batch_size,
    )
    published: list[int] = []
    try:
        for contact_id, slot in plan.sends:
            _publish_send(contact_id, slot)
            published.append(contact_id)
    finally:
        # Bookings left unmarked (the broker failed mid-batch) are given back
        # by recovery within seconds, not after their slots have aged.
        dispatching.mark_enqueued(published)
    enqueue_callbacks(plan.callbacks)
    if plan.next_dispatch_in is not None:
        dispatch.send_with_options(args=(queue_id,), delay=int(plan.next_dispatch_in * 1000))
    if plan.sends:
        log.info("dispatched", queue_id=queue_id, sends=len(plan.sends), next_in=plan.next_dispatch_in)


@actor(
    queue_name=SEND_QUEUE,
    retry_when=_retry_when,
    # A transient failure is retried after a backoff growing between these
    # bounds (SEND_RETRY_*_BACKOFF_MS), far below RabbitMQ's 30 min
    # consumer_timeout; the database's attempts counter ends the retries.
    min_backoff=_settings.send_retry_min_backoff_ms,
    max_backoff=_settings.send_retry_max_backoff_ms,
    time_limit=SEND_TIME_LIMIT_MS,
)
@_waits_out_database_outages
def send_contact(contact_id: int, slot: str | None = None, refusals: int = 0) -> None:
    """Send one contact's message (idempotent: a second delivery does nothing).

    Parameters:
      contact_id: the contact.
      slot: the booked slot (ISO) this message was published for; a message
        of an older booking claims nothing. None: whatever is booked.
      refusals: how often its tenant's bound refused this message (billing.fairness).
    """
    report = sending.send_one(contact_id, slot=datetime.fromisoformat(slot) if slot else None, refusals=refusals)
    enqueue_callbacks(report.callbacks)
    if report.outcome is sending.Outcome.SKIPPED:
        return
    if report.outcome is sending.Outcome.BUSY:
        # Not logged one by one: a hung gateway's backlog comes back here often.
        _publish_send(contact_id, report.slot, delay=report.delay, refusals=report.refusals)
        return
    log.info("send", contact_id=contact_id, queue_id=report.queue_id, outcome=report.outcome.value, reason=report.reason)
    if report.outcome is sending.Outcome.RETRY:
        raise RetryLater(report.reason)
    if report.outcome is sending.Outcome.LATER:
        _publish_send(contact_id, report.slot, delay=report.delay)
    elif report.outcome is sending.Outcome.DEFERRED:
        # Given back to the database: dispatch books it again (on another
        # instance if this one went down) or pauses the queue.
        dispatch.send(report.queue_id)


def _skips_database_outages(fn):
    """Periodic work the scheduler enqueues again anyway: during a database
    outage it logs one line and lets the next run do it."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DATABASE_DOWN as exc:
            log.warning("database unavailable; skipped until the next run", actor=fn.__name__, error=_first_line(exc))
    return wrapper


def _publish_send(contact_id: int, slot: datetime | None, *, delay: float | None = None, refusals: int = 0) -> None:
    """Publish send_contact for a booked slot, delayed until the slot (computed
    now, not when the batch was planned)."""
    if delay is None:
        delay = max(0.0, (slot - utcnow()).total_seconds()) if slot else 0.0
    args = (contact_id, slot.isoformat()) if slot else (contact_id,)
    if refusals:
        args = (contact_id, slot.isoformat() if slot else None, refusals)
    send_contact.send_with_options(args=args, delay=int(delay * 1000) or None)


@actor(queue_name=MAINTENANCE_QUEUE, max_retries=0)
@_skips_database_outages
def recover() -> None:
    """Find lost or stuck work and the pauses whose time is over; dispatch them."""
    found = recovery.recover(claim_timeout=timedelta(seconds=_settings.claim_timeout_seconds))
    for queue_id in found.queues:
        dispatch.send(queue_id)
    enqueue_callbacks(found.callbacks)
    enqueue_auto_replies(found.auto_replies)
    if found.queues or found.callbacks or found.auto_replies or found.released_bookings or found.released_claims:
        log.info("recovered", dispatched=len(found.queues), callbacks=len(found.callbacks),
                 auto_replies=len(found.auto_replies), released_bookings=found.released_bookings,
                 released_claims=found.released_claims)


@actor(queue_name=MAINTENANCE_QUEUE, max_retries=0, time_limit=60_000)
@_skips_database_outages
def check_instance(instance_id: int) -> None:
    """Ask the gateway for the instance's connection state and apply it."""
    instance = Instance.get_or_none(Instance.id == instance_id)
    if instance is None or not instance.is_active:
        return
    # A tenant's hung gateway holds at most its bound of threads with its
    # checks; the scheduler asks again at the next interval.
    with fairness.health_checks.held(instance.tenant_id) as admitted:
        if not admitted:
            log.info("health check skipped: the tenant's checks are at their bound", instance_id=instance_id)
            return
        queue_ids = health.check(instance)
    for queue_id in queue_ids:
        dispatch.send(queue_id)


@actor(queue_name=CALLBACKS_QUEUE, retry_when=_retry_when, min_backoff=1_000, max_backoff=60_000, time_limit=60_000)
@_waits_out_database_outages
def deliver_callback(delivery_id: str, refusals: int = 0) -> None:
    """POST one signed event to the caller; schedule the next try if it failed.

    Parameters:
      delivery_id: the delivery.
      refusals: how often its tenant's bound refused this message (billing.fairness).
    """
    tenant_id = CallbackDelivery.select(CallbackDelivery.tenant).where(CallbackDelivery.id == delivery_id).scalar()
    with fairness.callbacks.held(tenant_id) as admitted:
        if not admitted:  # a slow receiver of this tenant holds its bound: nothing claimed yet, come back later
            refusal = fairness.callbacks.refusal(tenant_id, refusals=refusals)
            deliver_callback.send_with_options(args=(delivery_id, refusal.refusals),
                                               delay=int(refusal.delay * 1000))
            return
        report = callbacks.deliver(delivery_id)
    if report.retry_in is not None:
        deliver_callback.send_with_options(args=(delivery_id,), delay=int(report.retry_in * 1000))


@actor(queue_name=SEND_QUEUE, retry_when=_retry_when, min_backoff=5_000, max_backoff=60_000)
@_waits_out_database_outages
def auto_reply(inbound_id: int, refusals: int = 0) -> None:
    """Answer a customer's payment question with their PIX code or link.

    Parameters:
      inbound_id: the customer's message.
      refusals: how often its tenant's bound refused this message (billing.fairness).
    """
    tenant_id = InboundMessage.select(InboundMessage.tenant).where(InboundMessage.id == inbound_id).scalar()
    with fairness.sends.held(tenant_id) as admitted:
        if not admitted:  # the tenant's sends are at their bound: nothing claimed yet, come back later
            refusal = fairness.sends.refusal(tenant_id, refusals=refusals)
            auto_reply.send_with_options(args=(inbound_id, refusal.refusals),
                                         delay=int(refusal.delay * 1000))
            return
        try:
            inbound.send_auto_reply(inbound_id)
        except GatewayError as exc:
            if exc.transient:
                raise RetryLater(exc.reason) from None
            log.warning("auto-reply failed", inbound_id=inbound_id, reason=exc.reason)


def enqueue_auto_replies(inbound_ids) -> None:
    for inbound_id in inbound_ids:
        auto_reply.send(inbound_id)


def enqueue_callbacks(delivery_ids) -> None:
    """Hand committed callback deliveries to the broker."""
    for delivery_id in delivery_ids:
        deliver_callback.send(delivery_id)


def start_queue(queue_id: str) -> None:
    """Enqueue the first dispatch of a queue (call after its commit)."""
    dispatch.send(str(queue_id))


class _Jobs:
    """The enqueue side of the actors, as the web shim uses it (web.Jobs)."""

    start_queue = staticmethod(start_queue)
    callbacks = staticmethod(enqueue_callbacks)
    auto_replies = staticmethod(enqueue_auto_replies)


jobs = _Jobs()


def configure(settings: Settings) -> None:
    """Run the actors with ``settings`` (tasks.setup() calls it).

    Parameters:
      settings: the process settings.
    """
    global _settings
    _settings = settings
    # Dramatiq's Retries middleware reads an actor's backoff from its options
    # at each failure, so this applies to messages already in flight too.
    send_contact.options.update(min_backoff=settings.send_retry_min_backoff_ms,
                                max_backoff=settings.send_retry_max_backoff_ms)


#: What ``from tasks.actors import *`` (and so the ``tasks`` package) exports:
#: every actor declared above, found on the registry, and the enqueue helpers.
__all__ = [*(declared.actor_name for declared in REGISTRY.actors.values()),
           "enqueue_auto_replies", "enqueue_callbacks", "jobs", "start_queue"]
