"""Webhook endpoints the gateways post to, one per instance.

Evolution cannot sign its webhooks: the instance's secret is part of the URL
configured on the gateway. WAHA signs the raw body (HMAC-SHA512, header
X-Webhook-Hmac) with the instance's secret as the key. Handling is idempotent
(gateways retry), and a body we do not understand is acknowledged, not failed,
so a gateway does not retry it forever.
"""
from __future__ import annotations

import hmac

from flask import Blueprint, current_app, jsonify, request

from billing import inbound
from billing.admin_schemas import MAX_ID
from billing.errors import NotFound, Unauthorized
from billing.models import Instance
from billing.providers import gateway_for
from billing.providers.waha import verify_waha_signature
from web.openapi import operation
from web.responses import EvolutionPath, EvolutionWebhook, WahaHeaders, WahaPath, WahaWebhook, WebhookAck

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


def _instance(instance_id: int, provider: str) -> Instance:
    if instance_id > MAX_ID:  # beyond the database's ids: cannot exist
        raise NotFound("no such instance")
    instance = Instance.get_or_none((Instance.id == instance_id) & (Instance.provider == provider))
    if instance is None:
        raise NotFound("no such instance")
    return instance


def _apply(instance: Instance):
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        return jsonify(success=True, events=0)
    handled = inbound.handle(instance, gateway_for(instance).parse_webhook(body))
    jobs = current_app.config["JOBS"]
    jobs.callbacks(handled.callbacks)
    jobs.auto_replies(handled.auto_replies)
    for queue_id in handled.resumed_queues:
        jobs.start_queue(queue_id)
    return jsonify(success=True, events=handled.events)


@bp.post("/evolution/<int:instance_id>/<secret>")
@operation(summary="Evolution API events (acks, replies, connection)", tags=("webhooks",), auth="webhook",
           path=EvolutionPath, body=EvolutionWebhook, response=WebhookAck, errors=(401, 404, 413),
           description="Evolution cannot sign its webhooks: the instance's webhook secret is the last segment of "
           "the URL configured on the gateway (401 when it does not match). Handling is idempotent; a body that "
           "is not understood is acknowledged with events 0.")
def evolution(instance_id: int, secret: str):
    instance = _instance(instance_id, "evolution")
    if not hmac.compare_digest(secret.encode(), instance.webhook_secret.encode()):
        raise Unauthorized("bad webhook secret")
    return _apply(instance)


@bp.post("/waha/<int:instance_id>")
@operation(summary="WAHA events (acks, replies, session status)", tags=("webhooks",), auth="webhook",
           path=WahaPath, headers=WahaHeaders, body=WahaWebhook, response=WebhookAck, errors=(401, 404, 413),
           description="WAHA signs the raw body: X-Webhook-Hmac is its hex HMAC-SHA512 keyed with the instance's "
           "webhook secret (401 when missing or wrong). Handling is idempotent; a body that is not understood is "
           "acknowledged with events 0.")
def waha(instance_id: int):
    instance = _instance(instance_id, "waha")
    if not verify_waha_signature(request.get_data(cache=True), request.headers, instance.webhook_secret):
        raise Unauthorized("bad or missing X-Webhook-Hmac signature")
    return _apply(instance)
