"""The rules every provider's webhook follows, read from its declaration.

web/webhooks.py routes each request here: :func:`authenticate` says whether
it comes from the instance's gateway, :func:`events_of` turns its body into
our events. What differs between gateways (a body signature, the envelope)
is in each provider's :class:`~billing.adapters.providers.registry.Webhook`.
"""
from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Optional

import structlog

from billing import webhook_replays
from billing.adapters.providers import gateway_for
from billing.adapters.providers.base import WebhookEvent
from billing.adapters.providers.registry import SignedDelivery, Webhook
from billing.errors import Forbidden, Unauthorized

log = structlog.get_logger(__name__)

#: The 401's message for every request that does not prove it comes from the
#: instance's gateway: an unknown instance, a wrong secret, a missing or wrong
#: signature. One message, so the answer does not tell which instance ids exist.
BAD_CREDENTIALS = "webhook not authenticated: unknown instance, or wrong secret or signature"

def refuse(reason: str) -> Unauthorized:
    """The uniform 401 of a webhook that is not authenticated; ``reason`` goes to our log only.

    Parameters:
      reason: why, for the operator.
    """
    log.info("webhook not authenticated", reason=reason)
    return Unauthorized(BAD_CREDENTIALS)


def authenticate(webhook: Webhook, instance: Any, *, secret: Optional[str], read_body: Callable[[], bytes],
                 headers: Mapping[str, str], now: Optional[datetime] = None) -> Optional[SignedDelivery]:
    """Whether a webhook request comes from the instance's gateway, now.

    Parameters:
      webhook: the instance's provider's webhook declaration.
      instance: has ``webhook_secret`` and ``options``.
      secret: the URL's secret segment; None on the signed URL without one
        (only declared for providers whose gateways sign).
      read_body: gives the request body exactly as received (signatures
        cover these bytes); called only to check a signature, so a wrong
        secret is refused before a body is read.
      headers: the request headers.
      now: our time (default: now), for a signed request's timestamps.

    Returns:
      What a signed request says about itself (its event id, for
      :mod:`billing.webhook_replays`), None when it carries no signature or
      its provider declares none.

    Raises:
      Unauthorized: the secret does not match, or the body signature is
        missing where required, or wrong (one message for all); or a signed
        request's time is missing or more than webhook_replays.MAX_SKEW from ours.
    """
    signature = webhook.signature
    if secret is None:
        if signature is None or not signature.verifies(read_body(), headers, instance.webhook_secret):
            raise refuse(signature.error if signature else "no secret in the URL")
    elif not hmac.compare_digest(secret.encode(), instance.webhook_secret.encode()):
        raise refuse("wrong secret in the URL")
    elif signature is not None and not signature.accepts(read_body(), headers, instance):
        raise refuse(signature.error)
    if signature is None or signature.delivery is None:
        return None
    delivery = signature.delivery(read_body(), headers)
    if delivery is None:
        return None
    if not delivery.sent_at:
        raise Unauthorized("a signed webhook must carry its timestamp")
    if not all(webhook_replays.is_fresh(moment, now=now) for moment in delivery.sent_at):
        minutes = int(webhook_replays.MAX_SKEW.total_seconds() // 60)
        raise Unauthorized(f"stale webhook: its timestamp is more than {minutes} minutes from ours")
    return delivery


def events_of(instance: Any, body: Mapping) -> list[WebhookEvent]:
    """The events an authenticated webhook body carries for ``instance``.

    Parameters:
      instance: the instance of the URL.
      body: the parsed JSON object.

    Raises:
      Forbidden: the body names another instance or session than the URL's:
        a secret leaked with one instance's URL cannot speak for another.
    """
    gateway = gateway_for(instance)
    if gateway.foreign_source(body):
        # The name is the sender's to choose: not echoed back.
        raise Forbidden("the webhook names another instance or session than this URL's")
    return gateway.parse_webhook(body)
