"""The ERP-facing API (seed contract). Thin: parse, call billing/, enqueue."""
from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from billing import campaigns, contacts, queues
from billing.apikeys import check_type_allowed, scoped_duplicate
from billing.domain import message_types
from billing.errors import DuplicateCampaign, InvalidRequest, NotFound
from billing.schemas import ControlRequest, SendRequest, parse
from web.auth import api_key_required
from web.bodies import json_body
from web.openapi import operation
from web.responses import (
    CampaignPath,
    ContactsPage,
    ContactsQuery,
    ControlResponse,
    QueuePath,
    QueueStatus,
    SendPath,
    SendResponse,
)

bp = Blueprint("billing_api", __name__)

#: The URL prefixes the API answers on: ours, and the seed's.
PREFIXES = ("/api/v1/billing", "/api/billing/v1/billing")




@bp.post("/send/<template_type>")
@operation(summary="Create a campaign and queue its reminders", tags=("billing",), path=SendPath, body=SendRequest,
           response=SendResponse, errors=(403, 404, 409, 413, 422),
           description="One path for every message type. A body that does not validate is refused whole (422, "
           "every problem in errors); a contact whose data is unusable (invalid phone, duplicate phone, missing "
           "template variable) is rejected alone and listed in rejected; the others are queued. An external_id "
           "already used answers 409 with the existing campaign's ids (without them when that campaign's type is "
           "outside the key's scope).")
@api_key_required
def send(template_type: str):
    """One code path for every declared message type (send/overdue, send/upcoming, send/notification...)."""
    try:
        message_types.get(template_type)
    except InvalidRequest as exc:
        raise NotFound(str(exc)) from None  # the URL names no resource
    check_type_allowed(g.api_key, template_type)
    try:
        created = campaigns.create_campaign(
            g.tenant,
            template_type=template_type,
            request=json_body(),
            max_contacts=current_app.config["SETTINGS"].max_contacts_per_request,
        )
    except DuplicateCampaign as exc:
        raise scoped_duplicate(exc, scope=_scope()) from None
    current_app.config["JOBS"].start_queue(created.queue_id)
    rejected = created.rejected
    return jsonify(
        success=True,
        message="Campanha criada com sucesso",
        billing_campaign_id=created.campaign_id,
        queue_id=created.queue_id,
        total_contacts=created.total_contacts,
        rejected_contacts=len(rejected),
        rejected=[r.as_dict() for r in rejected[: campaigns.MAX_REJECTED_IN_RESPONSE]],
        estimated_duration_minutes=created.estimated_duration_minutes,
    )


@bp.get("/queue/<queue_id>/status")
@operation(summary="A queue's progress", tags=("billing",), path=QueuePath, response=QueueStatus, errors=(404,))
@api_key_required
def queue_status(queue_id: str):
    queue = queues.get_queue(queue_id, tenant_id=g.tenant.id, types=_scope())
    return jsonify(success=True, **queues.queue_status(queue))


@bp.post("/queue/<queue_id>/control")
@operation(summary="Pause, resume or cancel a queue", tags=("billing",), path=QueuePath, body=ControlRequest,
           response=ControlResponse, errors=(404, 409, 413, 422))
@api_key_required
def queue_control(queue_id: str):
    queue = queues.get_queue(queue_id, tenant_id=g.tenant.id, types=_scope())
    body = parse(ControlRequest, json_body())
    if body.action == "pause":
        changed = queues.pause(queue, reason=body.reason or "")
    elif body.action == "resume":
        changed = queues.resume(queue)
        if changed:
            current_app.config["JOBS"].start_queue(str(queue.id))
    else:
        changed = queues.cancel(queue)
    status = queues.queue_status(queues.get_queue(queue_id, tenant_id=g.tenant.id, types=_scope()))
    return jsonify(success=True, action=body.action, changed=changed, message=_control_message(body.action, changed), **status)


def _scope() -> list[str] | None:
    """The message types the caller's key may see and control (None: every
    type, those declared later included): another type's queue or campaign
    is not found, as if it did not exist."""
    return g.api_key.message_types


def _control_message(action: str, changed: bool) -> str:
    done = {"pause": "Fila pausada", "resume": "Fila retomada", "cancel": "Fila cancelada"}
    already = {"pause": "A fila já estava pausada", "resume": "A fila já estava em andamento", "cancel": "A fila já estava cancelada"}
    return done[action] if changed else already[action]


@bp.get("/campaign/<campaign_id>/contacts")
@operation(summary="A campaign's contacts and what became of each, page by page", tags=("billing",),
           path=CampaignPath, query=ContactsQuery, response=ContactsPage, errors=(404, 422))
@api_key_required
def campaign_contacts(campaign_id: str):
    page = contacts.list_contacts(
        campaign_id,
        tenant_id=g.tenant.id,
        page=request.args.get("page", "1"),
        page_size=request.args.get("page_size", str(contacts.DEFAULT_PAGE_SIZE)),
        status=request.args.get("status") or None,
        types=_scope(),
    )
    return jsonify(success=True, **page)
