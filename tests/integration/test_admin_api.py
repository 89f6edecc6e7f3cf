"""The admin API over Flask's test client, on real SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import timedelta

import pytest

from billing import campaigns, dispatch, sending, tenants
from billing.adapters.models import ApiKey, Template
from tests.factories import admin_client, contact, phones

OPERATOR = "op-" + "x" * 40
ADMIN = "/api/v1/admin"


@pytest.fixture
def admin(db):
    return admin_client(db, operator_token=OPERATOR)


def test_keys_are_created_once_listed_without_secret_and_revoked(admin):
    created = admin.post(f"{ADMIN}/api-keys", json={"name": "ERP", "types": ["overdue"], "hourly_limit": 100,
                                                      "allowed_ips": ["10.0.0.0/8"]}, headers=admin.auth)
    assert created.status_code == 201
    secret = created.json["key"]
    assert secret.startswith(created.json["prefix"] + "_")
    listed = admin.get(f"{ADMIN}/api-keys", headers=admin.auth).json["results"]
    assert secret not in str(listed) and {k["name"] for k in listed} == {"test", "ERP"}
    revoked = admin.delete(f"{ADMIN}/api-keys/{created.json['id']}", headers=admin.auth)
    assert revoked.status_code == 200 and revoked.json["revoked_at"]
    assert ApiKey.get_by_id(created.json["id"]).revoked_at is not None


def test_templates_crud_and_preview(admin):
    made = admin.post(f"{ADMIN}/templates", headers=admin.auth, json={
        "type": "upcoming", "name": "lembrete", "strategy": "weighted",
        "variations": ["Olá {{nome_cliente}}, vence em {{dias_para_vencer}} dia(s)", {"text": "Oi {{nome_cliente}}", "weight": 3}]})
    assert made.status_code == 201 and [v["weight"] for v in made.json["variations"]] == [1, 3]
    template_id = made.json["id"]
    patched = admin.patch(f"{ADMIN}/templates/{template_id}", headers=admin.auth,
                          json={"variations": ["{{#if titulo}}{{titulo}}{{else}}Aviso{{/if}}: {{nome_cliente}}"], "is_active": False})
    assert patched.status_code == 200 and [v["text"][:9] for v in patched.json["variations"]] == ["{{#if tit"]
    assert patched.json["is_active"] is False
    bad = admin.patch(f"{ADMIN}/templates/{template_id}", headers=admin.auth, json={"variations": ["{{#if x}}open"]})
    assert bad.status_code == 422 and "unclosed" in bad.json["message"]

    preview = admin.post(f"{ADMIN}/templates/preview", headers=admin.auth, json={
        "text": "{{nome_cliente}}: {{valor}} vencido há {{dias_atraso}} dia(s)",
        "variables": {"nome_cliente": "Ana", "valor": 1234.5, "data_vencimento": "2000-01-01"}})
    assert preview.status_code == 200
    assert preview.json["rendered"][0]["text"].startswith("Ana: R$ 1.234,50 vencido há ")
    missing = admin.post(f"{ADMIN}/templates/preview", headers=admin.auth, json={"template_id": template_id, "variables": {}})
    assert missing.json["rendered"][0]["error"] == "missing variable 'nome_cliente'"
    assert admin.delete(f"{ADMIN}/templates/{template_id}", headers=admin.auth).status_code == 200
    assert Template.get_or_none(Template.id == template_id) is None


def test_instances_settings_campaigns_and_stats(admin):
    made = admin.post(f"{ADMIN}/instances", headers=admin.auth, json={
        "name": "loja", "provider": "evolution", "url": "http://127.0.0.1:8080", "token": "t", "messages_per_minute": 12,
        "daily_cap": 200, "warmup_days": 10})
    assert made.status_code == 201 and made.json["token_set"] is True and "token" not in made.json
    assert (made.json["min_interval"], made.json["max_interval"]) == (3.75, 6.25)
    patched = admin.patch(f"{ADMIN}/instances/{made.json['id']}", headers=admin.auth, json={"min_interval": 10, "max_interval": 30})
    assert (patched.json["min_interval"], patched.json["max_interval"]) == (10, 30)
    bad = admin.patch(f"{ADMIN}/instances/{made.json['id']}", headers=admin.auth, json={"min_interval": 40})
    assert bad.status_code == 422 and "above max interval" in bad.json["message"]
    listed = admin.get(f"{ADMIN}/instances", headers=admin.auth).json["results"]
    assert {i["name"]: i["health"] for i in listed} == {"sandbox": "unknown", "loja": "unknown"}

    settings = admin.patch(f"{ADMIN}/settings", headers=admin.auth,
                           json={"business_hours": "seg-sex 09:00-17:00", "holidays": "BR-SP", "daily_message_limit": 500})
    assert settings.status_code == 200 and settings.json["business_hours"] == "mon-fri 09:00-17:00"
    assert settings.json["holidays"] == "BR-SP" and settings.json["callback_secret"].startswith("whsec_")
    assert admin.patch(f"{ADMIN}/settings", headers=admin.auth, json={"business_hours": "sometimes"}).status_code == 422
    old = settings.json["callback_secret"]
    assert admin.post(f"{ADMIN}/settings/rotate-callback-secret", headers=admin.auth).json["callback_secret"] != old

    assert admin.patch(f"{ADMIN}/instances/{made.json['id']}", headers=admin.auth, json={"is_active": False}).json["is_active"] is False
    tenant = admin.setup.tenant

    tenants.update_tenant(tenant, business_hours="always", holidays="none")
    for index, kind in enumerate(("overdue", "notification")):
        extra = {"mensagem": "x"} if kind == "notification" else {}
        created = campaigns.create_campaign(tenant, template_type=kind, request={
            "external_id": f"e{index}", "contacts": [contact(p, **extra) for p in phones(3, start=index * 10)]})
        plan = dispatch.plan_dispatch(created.queue_id, horizon=timedelta(seconds=60), batch_size=10)
        for contact_id, _ in plan.sends:
            sending.send_one(contact_id)
    page = admin.get(f"{ADMIN}/campaigns?type=overdue", headers=admin.auth).json
    assert page["count"] == 1 and page["results"][0]["external_id"] == "e0" and page["results"][0]["status"] == "completed"
    assert admin.get(f"{ADMIN}/campaigns?type=bogus", headers=admin.auth).status_code == 422
    stats = admin.get(f"{ADMIN}/stats", headers=admin.auth).json
    assert stats["totals"]["sent"] == 6
    assert {(d["type"], d["sent"]) for d in stats["days"]} == {("overdue", 3), ("notification", 3)}
    assert admin.get(f"{ADMIN}/stats?from=2030-01-02&to=2030-01-01", headers=admin.auth).status_code == 422


def test_admin_auth(admin):
    assert admin.get(f"{ADMIN}/api-keys").status_code == 401
    assert admin.get(f"{ADMIN}/api-keys", headers={"Authorization": "Bearer bat_000000000000_nope"}).status_code == 401
    # an ERP's API key is not an admin token
    assert admin.get(f"{ADMIN}/api-keys", headers={"Authorization": f"Bearer {admin.setup.api_key}"}).status_code == 401
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    assert "X-Billing-Tenant" in admin.get(f"{ADMIN}/api-keys", headers=operator).json["message"]
    as_tenant = admin.get(f"{ADMIN}/api-keys", headers={**operator, "X-Billing-Tenant": "acme"})
    assert as_tenant.status_code == 200 and len(as_tenant.json["results"]) == 1
    assert admin.get(f"{ADMIN}/tenants", headers=admin.auth).status_code == 403
    created = admin.post(f"{ADMIN}/tenants", headers=operator, json={"name": "nova"})
    assert created.status_code == 201
    names = [t["name"] for t in admin.get(f"{ADMIN}/tenants", headers=operator).json["results"]]
    assert names == ["acme", "nova"]
    assert admin.post(f"{ADMIN}/tenants", headers=operator, json={"name": "nova"}).status_code == 409
