"""Callbacks to the caller's ``callback_url``: signed, retried, recorded.

An event is written as a :class:`~billing.adapters.models.CallbackDelivery` row in the
same transaction as the change it reports (an outbox), then delivered by an
actor. Deliveries follow Standard Webhooks: ``webhook-id`` (the same across
retries), ``webhook-timestamp`` and ``webhook-signature`` (HMAC-SHA256 with
the tenant's ``whsec_`` secret). Retries back off over hours; waits longer
than a broker should hold a message stay in the database for the scheduler.
A 410 disables the endpoint; ``Retry-After`` is honoured.

Every URL goes through the outbound guard (:mod:`billing.adapters.outbound`)
when a campaign is created and again when each attempt connects: public
addresses only, unless the operator allowed the tenant private callbacks; no
redirects. An attempt's record, which the tenant reads, tells what the
receiver answered, never how a connection failed (refused, reset, DNS,
timeout and TLS are one :data:`NO_HTTP_ANSWER`, without a duration), so it
cannot be used to scan ports; the detail goes to our log.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import requests
import structlog

from billing.adapters import outbound
from billing.adapters.db import write_transaction
from billing.adapters.models import CallbackAttempt, CallbackDelivery, Campaign, Contact, DisabledEndpoint, Queue, Tenant
from billing.clock import as_utc_iso, utcnow
from billing.domain import signing
from billing.errors import InvalidRequest

log = structlog.get_logger(__name__)

CONTACT_EVENTS = ("sent", "delivered", "read", "failed", "replied", "opted_out")
QUEUE_COMPLETED = "queue.completed"

#: Waits after attempt 1, 2, ... (then the delivery is given up): quick
#: first, then spread over about a day, as Standard Webhooks suggests.
RETRY_SCHEDULE = (
    timedelta(seconds=5), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2),
    timedelta(hours=5), timedelta(hours=10), timedelta(hours=10),
)

#: A receiver's Retry-After is honoured up to this long.
MAX_RETRY_AFTER = timedelta(hours=24)

#: Seconds to wait for the receiver (connect, read).
DELIVERY_TIMEOUT = (5, 15)

#: Deliveries whose next attempt is within this are handed to the broker with
#: a delay; later ones wait in the database for the scheduler.
BROKER_HORIZON = timedelta(minutes=5)

#: A delivery marked in flight longer than this lost its worker; the
#: scheduler hands it out again.
IN_FLIGHT_TIMEOUT = timedelta(minutes=2)

USER_AGENT = "whatsapp-billing-callbacks/1"

PENDING, DELIVERED, FAILED, DISABLED = "pending", "delivered", "failed", "disabled"

#: An attempt's error when the receiver gave no HTTP answer at all: how the
#: connection failed (refused, reset, DNS, timeout, TLS) is in our log only.
NO_HTTP_ANSWER = "no HTTP answer"
#: The error of a delivery to an endpoint an earlier 410 disabled (no request is made).
ENDPOINT_DISABLED = "endpoint disabled after 410 Gone"
#: Said after a refusal of a non-public address, so the tenant knows who can allow it.
PRIVATE_CALLBACK_HINT = "; ask the operator to allow private callbacks for this tenant"


# --- SSRF guard -------------------------------------------------------------

def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse a callback URL that is not http(s), or whose host resolves to
    a loopback, private, link-local or other non-public address (it would let
    a caller make us reach inside our own network), unless the operator
    allowed the tenant private callbacks. A host that does not resolve now
    passes: its deliveries fail to connect and are retried, and the guard
    checks again at every connect.

    Parameters:
      url: the callback URL.
      allow_private: the tenant's ``allow_private_callbacks``.

    Raises:
      InvalidRequest: with the reason (never the address the host resolved to).
    """
    try:
        outbound.check_url(url, policy=outbound.callback_policy(allow_private=allow_private), require_resolvable=False)
    except outbound.DestinationRefused as exc:
        raise InvalidRequest(_refusal(exc)) from None


def _refusal(exc: outbound.DestinationRefused) -> str:
    """What the tenant reads of a guard refusal (never the resolved address)."""
    hint = PRIVATE_CALLBACK_HINT if exc.reason == outbound.NOT_ALLOWED else ""
    return f"callback_url {exc.reason}{hint}"


def shown_error(*, status_code: int | None, error: str) -> str:
    """An attempt's or delivery's error as the tenant reads it: a guard
    refusal, an HTTP answer's text, or :data:`NO_HTTP_ANSWER` (rows written
    before the guard kept the connection's failure detail).

    Parameters:
      status_code: the receiver's status; None when there was no HTTP answer.
      error: the error as stored.
    """
    if status_code is not None or not error or error.startswith("callback_url") or error in (NO_HTTP_ANSWER, ENDPOINT_DISABLED):
        return error
    return NO_HTTP_ANSWER


# --- emitting -----------------------------------------------------------------

def _new_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def emit(*, tenant_id: int, campaign_id, url: str, event: str, data: dict, now: datetime | None = None) -> str | None:
    """Record one event for delivery; call inside the transaction that makes
    the change. Returns the delivery id, or None when there is no URL.

    Parameters:
      tenant_id: the owner (whose secret signs it).
      campaign_id: the campaign the event belongs to.
      url: the campaign's callback_url ("" means no callbacks).
      event: ``contact.<what>`` or ``queue.completed``.
      data: the event's data.
    """
    if not url:
        return None
    now = now or utcnow()
    delivery_id = _new_id()
    payload = {"id": delivery_id, "type": event, "timestamp": as_utc_iso(now), "data": data}
    CallbackDelivery.create(
        id=delivery_id, tenant=tenant_id, campaign=campaign_id, url=url, event=event, payload=payload,
        next_attempt_at=now, created_at=now,
    )
    return delivery_id


def contact_data(contact: Contact, campaign: Campaign, **extra) -> dict:
    """The data of a contact event."""
    return {
        "contact_id": contact.id,
        "index": contact.position,
        "billing_campaign_id": str(campaign.id),
        "external_id": campaign.external_id,
        "queue_id": str(contact.queue_id),
        "telefone": contact.phone,
        "status": contact.status,
        "reason": contact.reason,
        "attempts": contact.attempts,
        "provider_message_id": contact.provider_message_id,
        "metadata": campaign.metadata,
        **extra,
    }


def emit_for_contact(contact_id: int, event: str, *, now: datetime | None = None, **extra) -> str | None:
    """Emit ``contact.<event>`` with the contact as it is now (inside the
    transaction that changed it)."""
    row = (
        Contact.select(Contact, Campaign)
        .join(Campaign, on=(Contact.campaign == Campaign.id))
        .where(Contact.id == contact_id)
        .first()
    )
    if row is None or not row.campaign.callback_url:
        return None
    return emit(
        tenant_id=row.tenant_id, campaign_id=row.campaign.id, url=row.campaign.callback_url,
        event=f"contact.{event}", data=contact_data(row, row.campaign, **extra), now=now,
    )


def emit_queue_completed(queue_id, status: dict, *, now: datetime | None = None) -> str | None:
    queue = Queue.select(Queue, Campaign).join(Campaign).where(Queue.id == queue_id).first()
    if queue is None:
        return None
    campaign = queue.campaign
    return emit(
        tenant_id=queue.tenant_id, campaign_id=campaign.id, url=campaign.callback_url, event=QUEUE_COMPLETED,
        data={**status, "external_id": campaign.external_id, "metadata": campaign.metadata}, now=now,
    )


# --- delivering ----------------------------------------------------------------

@dataclass
class DeliveryReport:
    """What one attempt did.

    Parameters:
      status: the delivery's status after it (pending, delivered, failed, disabled).
      retry_in: seconds until the next attempt, when that is soon enough for
        the broker; None when the scheduler will hand it out (or it is over).
    """

    status: str
    retry_in: float | None = None


def _retry_after(response: requests.Response | None, *, now: datetime) -> timedelta | None:
    if response is None:
        return None
    raw = response.headers.get("Retry-After", "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return min(timedelta(seconds=int(raw)), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(raw).astimezone(UTC).replace(tzinfo=None)
    except (TypeError, ValueError):
        return None
    return min(max(when - now, timedelta(0)), MAX_RETRY_AFTER)


def _finish(delivery: CallbackDelivery, *, status: str, now: datetime, code: int | None, error: str,
            next_attempt_at: datetime | None = None) -> None:
    fields = {"status": status, "last_status_code": code, "last_error": error[:2000]}
    if status == DELIVERED:
        fields["delivered_at"] = now
    if next_attempt_at is not None:
        fields["next_attempt_at"] = next_attempt_at
    CallbackDelivery.update(**fields).where(CallbackDelivery.id == delivery.id).execute()


def deliver(delivery_id: str, *, now: datetime | None = None) -> DeliveryReport:
    """Make one attempt at a pending delivery.

    Parameters:
      delivery_id: the delivery (its webhook-id).
      now: the current time (tests).
    """
    now = now or utcnow()
    with write_transaction():
        delivery = CallbackDelivery.get_or_none(CallbackDelivery.id == delivery_id)
        if delivery is None or delivery.status != PENDING or delivery.next_attempt_at > now + timedelta(seconds=1):
            return DeliveryReport(status=delivery.status if delivery else "missing")
        # Claim the attempt: a second worker (or a redelivered message) finds
        # next_attempt_at in the future and leaves it alone.
        CallbackDelivery.update(attempts=CallbackDelivery.attempts + 1, next_attempt_at=now + IN_FLIGHT_TIMEOUT).where(
            CallbackDelivery.id == delivery_id
        ).execute()
        tenant = Tenant.get_by_id(delivery.tenant_id)
        attempt = delivery.attempts + 1
    if DisabledEndpoint.get_or_none((DisabledEndpoint.tenant == tenant.id) & (DisabledEndpoint.url == delivery.url)):
        _finish(delivery, status=DISABLED, now=now, code=None, error=ENDPOINT_DISABLED)
        return DeliveryReport(status=DISABLED)

    body = json.dumps(delivery.payload, ensure_ascii=False, separators=(",", ":")).encode()
    response, error, refused, started = None, "", False, time.monotonic()
    try:
        headers = signing.headers_for(secret=tenant.callback_secret, msg_id=delivery.id, body=body)
        headers.update({"Content-Type": "application/json", "User-Agent": USER_AGENT})
        response = outbound.request(
            "POST", delivery.url, policy=outbound.callback_policy(allow_private=tenant.allow_private_callbacks),
            data=body, headers=headers, timeout=DELIVERY_TIMEOUT,
        )
    except outbound.DestinationRefused as exc:
        refused, error = True, _refusal(exc)
    except requests.RequestException as exc:
        # The tenant reads the attempt: one text for every connection failure.
        error = NO_HTTP_ANSWER
        log.warning("callback got no HTTP answer", delivery=delivery.id, url=delivery.url,
                    error=f"{type(exc).__name__}: {exc}"[:500])
    code = response.status_code if response is not None else None
    # Only an HTTP answer has a duration: the time a connection took to fail
    # would tell an open port from a filtered one.
    CallbackAttempt.create(
        delivery=delivery.id, attempted_at=now, status_code=code, error=error,
        duration_ms=int((time.monotonic() - started) * 1000) if response is not None else 0,
    )

    if code is not None and 200 <= code < 300:
        _finish(delivery, status=DELIVERED, now=utcnow(), code=code, error="")
        return DeliveryReport(status=DELIVERED)
    if code == 410:
        DisabledEndpoint.insert(tenant=tenant.id, url=delivery.url, disabled_at=now).on_conflict_ignore().execute()
        _finish(delivery, status=DISABLED, now=now, code=code, error="410 Gone: endpoint disabled")
        return DeliveryReport(status=DISABLED)
    if refused:  # refused by the SSRF guard: trying again will not help
        _finish(delivery, status=FAILED, now=now, code=None, error=error)
        return DeliveryReport(status=FAILED)
    error = error or f"HTTP {code}"
    if attempt > len(RETRY_SCHEDULE):
        _finish(delivery, status=FAILED, now=now, code=code, error=error)
        return DeliveryReport(status=FAILED)
    wait = max(RETRY_SCHEDULE[attempt - 1], _retry_after(response, now=now) or timedelta(0))
    _finish(delivery, status=PENDING, now=now, code=code, error=error, next_attempt_at=now + wait)
    return DeliveryReport(status=PENDING, retry_in=wait.total_seconds() if wait <= BROKER_HORIZON else None)


def due(*, now: datetime | None = None, limit: int = 500) -> list[str]:
    """Pending deliveries whose time has come (or whose worker was lost)."""
    now = now or utcnow()
    return [
        d.id
        for d in CallbackDelivery.select(CallbackDelivery.id)
        .where((CallbackDelivery.status == PENDING) & (CallbackDelivery.next_attempt_at <= now))
        .order_by(CallbackDelivery.next_attempt_at)
        .limit(limit)
    ]


def retry_now(delivery_id: str, *, now: datetime | None = None) -> None:
    """Make a failed or pending delivery due at once (``billing callbacks retry``)."""
    now = now or utcnow()
    CallbackDelivery.update(status=PENDING, next_attempt_at=now).where(
        (CallbackDelivery.id == delivery_id) & (CallbackDelivery.status.in_((PENDING, FAILED)))
    ).execute()
