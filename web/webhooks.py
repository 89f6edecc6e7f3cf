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
from billing.errors import NotFound, Unauthorized
from billing.models import Instance
from billing.providers import gateway_for
from billing.providers.waha import verify_waha_signature

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


def _instance(instance_id: int, provider: str) -> Instance:
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
def evolution(instance_id: int, secret: str):
    instance = _instance(instance_id, "evolution")
    if not hmac.compare_digest(secret.encode(), instance.webhook_secret.encode()):
        raise Unauthorized("bad webhook secret")
    return _apply(instance)


@bp.post("/waha/<int:instance_id>")
def waha(instance_id: int):
    instance = _instance(instance_id, "waha")
    if not verify_waha_signature(request.get_data(cache=True), request.headers, instance.webhook_secret):
        raise Unauthorized("bad or missing X-Webhook-Hmac signature")
    return _apply(instance)
