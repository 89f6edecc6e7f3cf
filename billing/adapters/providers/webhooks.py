"""The rules every provider's webhook follows, read from its declaration.

web/webhooks.py routes each request here: :func:`authenticate` says whether
it comes from the instance's gateway, :func:`events_of` turns its body into
our events. What differs between gateways (a body signature, the envelope)
is in each provider's :class:`~billing.adapters.providers.registry.Webhook`.
"""
from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any, Optional

from billing.adapters.providers import gateway_for
from billing.adapters.providers.base import WebhookEvent
from billing.adapters.providers.registry import Webhook
from billing.errors import Forbidden, Unauthorized

#: The 401's message for a secret segment that is not the instance's.
BAD_SECRET = "bad webhook secret"


def authenticate(webhook: Webhook, instance: Any, *, secret: Optional[str], read_body: Callable[[], bytes],
                 headers: Mapping[str, str]) -> None:
    """Whether a webhook request comes from the instance's gateway.

    Parameters:
      webhook: the instance's provider's webhook declaration.
      instance: has ``webhook_secret`` and ``options``.
      secret: the URL's secret segment; None on the signed URL without one
        (only declared for providers whose gateways sign).
      read_body: gives the request body exactly as received (signatures
        cover these bytes); called only to check a signature, so a wrong
        secret is refused before a body is read.
      headers: the request headers.

    Raises:
      Unauthorized: the secret does not match, or the body signature is
        missing where required, or wrong.
    """
    signature = webhook.signature
    if secret is None:
        if signature is None or not signature.verifies(read_body(), headers, instance.webhook_secret):
            raise Unauthorized(signature.error if signature else BAD_SECRET)
        return
    if not hmac.compare_digest(secret.encode(), instance.webhook_secret.encode()):
        raise Unauthorized(BAD_SECRET)
    if signature is not None and not signature.accepts(read_body(), headers, instance):
        raise Unauthorized(signature.error)


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
