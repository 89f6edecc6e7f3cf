"""The admin API: keys, templates (with a preview), instances, campaigns,
settings and stats, each scoped to the caller's tenant. Thin: parse, call
billing.admin, answer JSON."""
from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from billing import admin, apikeys, tenants
from billing.admin_schemas import (
    ApiKeyCreate,
    CallbacksQuery,
    CampaignsQuery,
    CeilingsPatch,
    InstanceCreate,
    InstancePatch,
    PreviewRequest,
    SettingsPatch,
    StatsQuery,
    TemplateCreate,
    TemplatePatch,
    TenantCreate,
)
from billing.bodies import check_query
from billing.callback_log import deliveries
from billing.errors import Forbidden
from billing.schemas import parse
from web.auth import admin_required, tenant_required
from web.bodies import json_body
from web.openapi import operation

bp = Blueprint("admin", __name__, url_prefix="/api/v1/admin")

ADMIN = {"auth": "admin", "errors": (401, 404, 422)}


def _body(model):
    return parse(model, json_body())


def _query(model):
    return parse(model, check_query(dict(request.args.items())))


def _tenant():
    tenant_required()
    return g.tenant


@bp.get("/api-keys")
@operation(summary="List API keys (without secrets)", tags=("admin",), **ADMIN)
@admin_required
def list_keys():
    return jsonify(success=True, results=admin.list_keys(_tenant()))


@bp.post("/api-keys")
@operation(summary="Create an API key (its secret is shown only in this answer)", tags=("admin",), body=ApiKeyCreate,
           errors=(401, 403, 404, 422), auth="admin")
@admin_required
def create_key():
    return jsonify(success=True, **admin.create_key(_tenant(), _body(ApiKeyCreate), operator=g.operator)), 201


@bp.delete("/api-keys/<int:key_id>")
@operation(summary="Revoke an API key", tags=("admin",), **ADMIN)
@admin_required
def revoke_key(key_id: int):
    return jsonify(success=True, **admin.revoke_key(_tenant(), key_id))


@bp.get("/templates")
@operation(summary="List templates with their variations", tags=("admin",), **ADMIN)
@admin_required
def list_templates():
    return jsonify(success=True, results=admin.list_templates(_tenant()))


@bp.post("/templates")
@operation(summary="Create a template", tags=("admin",), body=TemplateCreate, errors=(401, 404, 409, 422), auth="admin")
@admin_required
def create_template():
    return jsonify(success=True, **admin.create_template(_tenant(), _body(TemplateCreate))), 201


@bp.post("/templates/preview")
@operation(summary="Render a text or a template against sample variables, without sending", tags=("admin",),
           body=PreviewRequest, **ADMIN)
@admin_required
def preview_template():
    return jsonify(success=True, **admin.preview(_tenant(), _body(PreviewRequest)))


@bp.get("/templates/<int:template_id>")
@operation(summary="One template", tags=("admin",), **ADMIN)
@admin_required
def get_template(template_id: int):
    return jsonify(success=True, **admin.get_template(_tenant(), template_id))


@bp.patch("/templates/<int:template_id>")
@operation(summary="Change a template (variations are replaced as a whole)", tags=("admin",), body=TemplatePatch, **ADMIN)
@admin_required
def update_template(template_id: int):
    admin.get_template(_tenant(), template_id)  # another tenant's id is a 404 whatever the body
    return jsonify(success=True, **admin.update_template(_tenant(), template_id, _body(TemplatePatch)))


@bp.delete("/templates/<int:template_id>")
@operation(summary="Delete a template", tags=("admin",), **ADMIN)
@admin_required
def delete_template(template_id: int):
    admin.delete_template(_tenant(), template_id)
    return jsonify(success=True, message="template deleted")


@bp.get("/instances")
@operation(summary="List WhatsApp instances with their health and pace", tags=("admin",), **ADMIN)
@admin_required
def list_instances():
    return jsonify(success=True, results=admin.list_instances(_tenant()))


@bp.post("/instances")
@operation(summary="Register a WhatsApp instance", tags=("admin",), body=InstanceCreate, errors=(401, 404, 409, 422), auth="admin")
@admin_required
def create_instance():
    return jsonify(success=True, **admin.create_instance(_tenant(), _body(InstanceCreate))), 201


@bp.get("/instances/<int:instance_id>")
@operation(summary="One instance", tags=("admin",), **ADMIN)
@admin_required
def get_instance(instance_id: int):
    return jsonify(success=True, **admin.get_instance(_tenant(), instance_id))


@bp.patch("/instances/<int:instance_id>")
@operation(summary="Change an instance's pace or connection", tags=("admin",), body=InstancePatch, **ADMIN)
@admin_required
def update_instance(instance_id: int):
    admin.get_instance(_tenant(), instance_id)  # another tenant's id is a 404 whatever the body
    return jsonify(success=True, **admin.update_instance(_tenant(), instance_id, _body(InstancePatch)))


@bp.get("/campaigns")
@operation(summary="List campaigns, newest first, with filters", tags=("admin",), query=CampaignsQuery, **ADMIN)
@admin_required
def list_campaigns():
    return jsonify(success=True, **admin.list_campaigns(_tenant(), _query(CampaignsQuery)))


@bp.get("/settings")
@operation(summary="The tenant's settings (hours, holidays, caps, limits, callback secret)", tags=("admin",), **ADMIN)
@admin_required
def get_settings():
    return jsonify(success=True, **admin.settings_view(_tenant()))


@bp.patch("/settings")
@operation(summary="Change the tenant's settings (a tenant admin: within the operator's ceilings; "
           "allow_private_callbacks: operator only)", tags=("admin",), body=SettingsPatch, errors=(401, 403, 404, 422),
           auth="admin")
@admin_required
def update_settings():
    return jsonify(success=True, **admin.update_settings(_tenant(), _body(SettingsPatch), operator=g.operator))


@bp.patch("/settings/ceilings")
@operation(summary="Set the highest limits the tenant's admins may set (operator token only)", tags=("operator",),
           body=CeilingsPatch, errors=(401, 403, 404, 422), auth="admin")
@admin_required
def update_ceilings():
    _operator_only("sets the ceilings of a tenant's limits")
    return jsonify(success=True, **admin.update_ceilings(_tenant(), _body(CeilingsPatch)))


@bp.post("/settings/rotate-callback-secret")
@operation(summary="Replace the callback signing secret", tags=("admin",), **ADMIN)
@admin_required
def rotate_callback_secret():
    return jsonify(success=True, **admin.rotate_secret(_tenant()))


@bp.get("/admin-tokens")
@operation(summary="List admin tokens without their secrets (a tenant admin: its tenant's; the operator: "
           "X-Billing-Tenant's, or every tenant's without it)", tags=("admin",), **ADMIN)
@admin_required
def list_admin_tokens():
    return jsonify(success=True, results=apikeys.list_admin_tokens(tenant=g.tenant))


@bp.delete("/admin-tokens/<int:token_id>")
@operation(summary="Revoke an admin token (a tenant admin: its tenant's; the operator: any)", tags=("admin",), **ADMIN)
@admin_required
def revoke_admin_token(token_id: int):
    token = apikeys.find_admin_token(token_id=token_id, tenant=None if g.operator else g.tenant)
    return jsonify(success=True, **apikeys.revoke_admin_token(token))


@bp.get("/stats")
@operation(summary="Sent, delivered, read, failed, replied and opted out, per day and type", tags=("admin",),
           query=StatsQuery, **ADMIN)
@admin_required
def stats():
    return jsonify(success=True, **admin.stats(_tenant(), _query(StatsQuery)))


@bp.get("/callbacks")
@operation(summary="The newest callback deliveries", tags=("admin",), query=CallbacksQuery, **ADMIN)
@admin_required
def list_callbacks():
    query = _query(CallbacksQuery)
    return jsonify(success=True, results=deliveries(tenant_id=_tenant().id, status=query.status, limit=query.limit))


@bp.get("/tenants")
@operation(summary="List tenants (operator token only)", tags=("operator",), errors=(401, 403), auth="admin")
@admin_required
def list_tenants():
    _operator_only("manages tenants")
    return jsonify(success=True, results=admin.list_tenants())


@bp.post("/tenants")
@operation(summary="Create a tenant with the default templates (operator token only)", tags=("operator",),
           body=TenantCreate, errors=(401, 403, 409, 422), auth="admin")
@admin_required
def create_tenant():
    _operator_only("manages tenants")
    body = _body(TenantCreate)
    from billing.bootstrap import install_default_templates

    tenant = tenants.create_tenant(body.name, timezone=body.timezone)
    install_default_templates(tenant)
    return jsonify(success=True, id=tenant.id, name=tenant.name, timezone=tenant.timezone), 201


def _operator_only(what: str) -> None:
    """Refuse a tenant admin's token where only the operator's acts.

    Parameters:
      what: what only the operator does, for the 403's message.
    """
    if not g.operator:
        raise Forbidden(f"only the operator token (BILLING_ADMIN_TOKEN) {what}")
