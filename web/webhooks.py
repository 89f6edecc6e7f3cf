"""Webhook endpoints the gateways post to, one per instance.

Neither Evolution nor WAHA Core 2024.10 signs its webhooks, so each instance's
secret is part of the URL configured on the gateway (``billing instance show``
prints it). WAHA builds that sign (Plus, newer versions) send X-Webhook-Hmac,
the HMAC-SHA512 of the raw body keyed with the same secret: it is verified
when it comes, and always when the instance's options say ``require_hmac``.
The old ``/webhooks/waha/<id>`` URL still works for signed bodies only.

Evolution's "Webhook by Events" appends the event's name to the URL
(``.../connection-update``); the body's ``event`` field decides what it is.
A body that names another instance or session than the URL's is refused
(403): a secret leaked with one instance's URL cannot speak for another.
Handling is idempotent (gateways retry), and a body we do not understand is
acknowledged, not failed, so a gateway does not retry it forever.
"""
from __future__ import annotations

import hmac

from flask import Blueprint, current_app, jsonify, request

from billing import inbound
from billing.admin_schemas import MAX_ID
from billing.errors import Forbidden, NotFound, Unauthorized
from billing.adapters.models import Instance
from billing.adapters.providers import gateway_for
from billing.adapters.providers.waha import requires_hmac, verify_waha_signature, webhook_signature_ok
from web.openapi import operation
from web.responses import (
    EvolutionEventPath, EvolutionPath, EvolutionWebhook, WahaHeaders, WahaPath, WahaSecretHeaders, WahaSecretPath,
    WahaWebhook, WebhookAck,
)

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

#: The statuses a webhook view may answer besides 200 (documented).
WEBHOOK_ERRORS = (401, 403, 404, 413)


def _instance(instance_id: int, provider: str) -> Instance:
    if instance_id > MAX_ID:  # beyond the database's ids: cannot exist
        raise NotFound("no such instance")
    instance = Instance.get_or_none((Instance.id == instance_id) & (Instance.provider == provider))
    if instance is None:
        raise NotFound("no such instance")
    return instance


def _check_secret(instance: Instance, secret: str) -> None:
    if not hmac.compare_digest(secret.encode(), instance.webhook_secret.encode()):
        raise Unauthorized("bad webhook secret")


def _apply(instance: Instance):
    body = request.get_json(silent=True, force=True)
    if not isinstance(body, dict):
        return jsonify(success=True, events=0)
    gateway = gateway_for(instance)
    if gateway.foreign_source(body):
        # The name is the sender's to choose: not echoed back.
        raise Forbidden("the webhook names another instance or session than this URL's")
    handled = inbound.handle(instance, gateway.parse_webhook(body))
    jobs = current_app.config["JOBS"]
    jobs.callbacks(handled.callbacks)
    jobs.auto_replies(handled.auto_replies)
    for queue_id in handled.resumed_queues:
        jobs.start_queue(queue_id)
    return jsonify(success=True, events=handled.events)


@bp.post("/evolution/<int:instance_id>/<secret>")
@operation(summary="Evolution API events (acks, replies, connection)", tags=("webhooks",), auth="webhook",
           path=EvolutionPath, body=EvolutionWebhook, response=WebhookAck, errors=WEBHOOK_ERRORS,
           description="Evolution cannot sign its webhooks: the instance's webhook secret is the last segment of the "
           "URL configured on the gateway (401 when it does not match). A body whose instance is not this URL's "
           "instance is refused with 403. remove.instance and instance.delete take the instance down at once. "
           "Handling is idempotent; a body that is not understood is acknowledged with events 0.")
def evolution(instance_id: int, secret: str):
    instance = _instance(instance_id, "evolution")
    _check_secret(instance, secret)
    return _apply(instance)


@bp.post("/evolution/<int:instance_id>/<secret>/<event>")
@operation(summary="Evolution API events, 'Webhook by Events' on", tags=("webhooks",), auth="webhook",
           path=EvolutionEventPath, body=EvolutionWebhook, response=WebhookAck, errors=WEBHOOK_ERRORS,
           description="With 'Webhook by Events' on, Evolution appends the event's name to the configured URL "
           "(connection-update, messages-upsert, messages-update, ...). Handled exactly like the plain URL: the "
           "body's event decides, the secret segment authenticates (401), a body naming another instance is 403.")
def evolution_by_event(instance_id: int, secret: str, event: str):
    return evolution(instance_id, secret)


@bp.post("/waha/<int:instance_id>/<secret>")
@operation(summary="WAHA events (acks, replies, session status)", tags=("webhooks",), auth="webhook",
           path=WahaSecretPath, headers=WahaSecretHeaders, body=WahaWebhook, response=WebhookAck,
           errors=WEBHOOK_ERRORS,
           description="WAHA Core does not sign its webhooks: the instance's webhook secret is the last segment of "
           "the URL configured on the gateway (401 when it does not match). An X-Webhook-Hmac (WAHA Plus, newer "
           "builds) is verified when it comes, and required when the instance's options set require_hmac (401 "
           "when missing or wrong). A body whose session is not this instance's is refused with 403. Handling is "
           "idempotent; a body that is not understood is acknowledged with events 0.")
def waha(instance_id: int, secret: str):
    instance = _instance(instance_id, "waha")
    _check_secret(instance, secret)
    raw = request.get_data(cache=True)
    if not webhook_signature_ok(raw, request.headers, secret=instance.webhook_secret, required=requires_hmac(instance)):
        raise Unauthorized("bad or missing X-Webhook-Hmac signature")
    return _apply(instance)


@bp.post("/waha/<int:instance_id>")
@operation(summary="WAHA events, signed (the former URL, without the secret)", tags=("webhooks",), auth="webhook",
           path=WahaPath, headers=WahaHeaders, body=WahaWebhook, response=WebhookAck, errors=WEBHOOK_ERRORS,
           description="Kept for gateways configured before the secret moved into the URL: only signed bodies are "
           "accepted (X-Webhook-Hmac, hex HMAC-SHA512 of the raw body keyed with the instance's webhook secret; "
           "401 when missing or wrong). WAHA Core never signs: configure /webhooks/waha/{instance_id}/{secret} "
           "instead. A body whose session is not this instance's is refused with 403.")
def waha_signed(instance_id: int):
    instance = _instance(instance_id, "waha")
    if not verify_waha_signature(request.get_data(cache=True), request.headers, instance.webhook_secret):
        raise Unauthorized("bad or missing X-Webhook-Hmac signature")
    return _apply(instance)
