"""Webhook endpoints the gateways post to, one URL per instance.

One view serves every provider: ``/webhooks/<provider>/<instance_id>/<secret>``,
plus ``.../<secret>/<event>`` for providers whose gateway appends the event's
name (Evolution's "Webhook by Events") and ``/webhooks/<provider>/<instance_id>``
for providers whose gateway signs its bodies (WAHA's former URL, signed bodies
only). The URLs are added from the provider registry when the blueprint is
registered on an app, each documented with its provider's body and headers; a
URL a provider does not declare stays a 404. How a request is authenticated
and what its body means are the provider's rules
(billing/adapters/providers/webhooks.py).

Handling is idempotent (gateways retry), and a body we do not understand is
acknowledged, not failed, so a gateway does not retry it forever; a body
that is not JSON at all is a 400, and text is stored cleaned (billing/bodies.py). A signed
event whose id was received already is acknowledged with events 0 and not
applied again (billing/webhook_replays.py). An unknown instance id and a wrong
secret or signature get the same 401; failed authentications count against
the client's address (web/auth.py).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from flask import Blueprint, current_app, jsonify, request

from billing import inbound, webhook_replays
from billing.adapters.models import Instance
from billing.adapters.providers import PROVIDERS, Provider, webhooks
from billing.adapters.providers.registry import WebhookDoc
from billing.admin_schemas import MAX_ID
from web.auth import failures_counted
from web.bodies import json_body, raw_body
from web.openapi import operation
from web.responses import SignedWebhookPath, WebhookAck, WebhookEventPath, WebhookPath

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

#: The statuses a webhook view may answer besides 200 (documented): 401 for an
#: unknown instance too, 429 after repeated failed authentications.
WEBHOOK_ERRORS = (401, 403, 404, 413, 429)


def receive(provider: Provider, instance_id: int, secret: Optional[str]):
    """Authenticate one webhook request for ``provider`` and act on its events.

    Parameters:
      provider: the URL's provider.
      instance_id: the URL's instance.
      secret: the URL's secret segment (None on the signed URL without one).
    """
    with failures_counted():
        instance = _instance(instance_id, provider.name)
        delivery = webhooks.authenticate(provider.webhook, instance, secret=secret, headers=request.headers,
                                         read_body=raw_body)
    replay_id = delivery.event_id if delivery is not None else ""
    if replay_id and not webhook_replays.first_delivery(instance.id, replay_id):
        return jsonify(success=True, events=0)  # a replay (or the gateway's retry) of an event applied already
    try:
        # Gateways name no Content-Type reliably; a customer's text is stored cleaned, never refused.
        return _act(instance, json_body(text="clean", require_json_type=False))
    except Exception:
        if replay_id:  # not applied: the gateway's retry must be
            webhook_replays.forget(instance.id, replay_id)
        raise


def _act(instance: Instance, body):
    """Act on an authenticated webhook body's events; answer how many."""
    if not isinstance(body, dict):
        return jsonify(success=True, events=0)
    handled = inbound.handle(instance, webhooks.events_of(instance, body))
    jobs = current_app.config["JOBS"]
    jobs.callbacks(handled.callbacks)
    jobs.auto_replies(handled.auto_replies)
    for queue_id in handled.resumed_queues:
        jobs.start_queue(queue_id)
    return jsonify(success=True, events=handled.events)


def _instance(instance_id: int, provider: str) -> Instance:
    """The URL's instance; an unknown one is refused exactly like a wrong secret
    (same status, same body), so the answers do not tell which ids exist."""
    if instance_id > MAX_ID:  # beyond the database's ids: cannot exist
        raise webhooks.refuse("no such instance")
    instance = Instance.get_or_none((Instance.id == instance_id) & (Instance.provider == provider))
    if instance is None:
        raise webhooks.refuse("no such instance")
    return instance


def _view(provider: Provider, name: str, doc: WebhookDoc, *, path: type, headers: Optional[type],
          signed: bool) -> Callable:
    """A view of ``provider``'s webhook, documented as ``doc`` (its function
    name makes the OpenAPI operation id ``webhooks_<name>``)."""
    def view(instance_id: int, secret: Optional[str] = None, event: Optional[str] = None):
        # The event segment is informative only: the body's event decides.
        return receive(provider, instance_id, None if signed else secret)

    view.__name__ = view.__qualname__ = name
    return operation(summary=doc.summary, description=doc.description, tags=("webhooks",), auth="webhook",
                     path=path, headers=headers, body=provider.webhook.body, response=WebhookAck,
                     errors=WEBHOOK_ERRORS)(view)


@bp.record
def _add_provider_routes(state) -> None:
    """Add each registered provider's webhook URLs (when the blueprint is registered on an app)."""
    for provider in PROVIDERS.values():
        webhook = provider.webhook
        if webhook is None:
            continue
        base = f"/{provider.name}/<int:instance_id>"
        signature = webhook.signature
        headers = signature.headers if signature else None
        routes = [(f"{base}/<secret>", provider.name, webhook.doc, WebhookPath, headers, False)]
        if webhook.by_event is not None:
            routes.append((f"{base}/<secret>/<event>", f"{provider.name}_by_event", webhook.by_event,
                           WebhookEventPath, headers, False))
        if signature is not None and signature.signed_url is not None:
            routes.append((base, f"{provider.name}_signed", signature.signed_url, SignedWebhookPath,
                           signature.signed_headers, True))
        for rule, name, doc, path, route_headers, signed in routes:
            view = _view(provider, name, doc, path=path, headers=route_headers, signed=signed)
            state.add_url_rule(rule, endpoint=name, view_func=view, methods=["POST"])
