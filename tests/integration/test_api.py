"""The HTTP API through Flask's test client, on real SQLite and PostgreSQL.
The broker is replaced by a recorder here; the end-to-end tests use real ones."""
from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from billing import apikeys
from billing.adapters.models import ApiKey, Campaign
from billing.config import Settings
from tests.factories import RecordedJobs, contact, make_tenant, phones
from web import create_app

SEED_001_BODY = {
    "template_type": "overdue",
    "contacts": [
        {"nome": "João Silva", "telefone": "+5511999999999", "valor": "R$ 150,00", "data_vencimento": "2025-01-15", "valor_total": "R$ 150,00"}
    ],
    "external_id": "fatura-12345",
}
SEED_002_BODY = {
    "external_id": "fatura-67890",
    "callback_url": "https://meu-erp.com/webhooks/billing",
    "contacts": [
        {
            "nome_cliente": "João Silva", "telefone": "+5511999999999", "valor": "R$ 150,00", "data_vencimento": "10/12/2025",
            "valor_total": "R$ 165,00", "codigo_pix": "00020126580014br.gov.bcb.pix...",
            "link_pagamento": "https://pay.meu-erp.com/invoice/67890", "numero_fatura": "2025-67890",
        }
    ],
    "metadata": {"cliente_id": "12345", "empresa": "Empresa XYZ"},
}
STATUS_FIELDS = {
    "id", "status", "status_display", "total_contacts", "contacts_sent", "contacts_delivered", "contacts_failed",
    "contacts_pending_retry", "progress_percent", "current_rate", "eta", "started_at", "completed_at", "pause_reason",
}


@pytest.fixture
def api(db):
    jobs = RecordedJobs()
    app = create_app(Settings(database_url=db, max_contacts_per_request=50), jobs=jobs)
    setup = make_tenant()
    client = app.test_client()
    client.started = jobs.started
    client.setup = setup
    client.headers = {"X-Billing-API-Key": setup.api_key}
    return client


@pytest.mark.parametrize("prefix", ["/api/billing/v1/billing", "/api/v1/billing"])
@pytest.mark.parametrize("body", [SEED_001_BODY, SEED_002_BODY], ids=["seed001", "seed002"])
def test_seed_examples_are_accepted_verbatim(api, prefix, body):
    response = api.post(f"{prefix}/send/overdue", json=body, headers=api.headers)
    assert response.status_code == 200, response.json
    data = response.json
    assert data["success"] is True and data["total_contacts"] == 1 and data["rejected_contacts"] == 0
    assert set(data) >= {"success", "message", "billing_campaign_id", "queue_id", "total_contacts", "estimated_duration_minutes"}
    assert api.started == [data["queue_id"]]  # enqueued after commit
    status = api.get(f"{prefix}/queue/{data['queue_id']}/status/", headers=api.headers)
    assert status.status_code == 200 and set(status.json) >= STATUS_FIELDS
    assert status.json["status"] == "pending" and status.json["total_contacts"] == 1


def test_the_three_types_share_one_path(api):
    future = (date.today() + timedelta(days=30)).isoformat()  # upcoming: not yet due
    for template_type, extra in (("overdue", {}), ("upcoming", {"data_vencimento": future}),
                                 ("notification", {"mensagem": "Aviso"})):
        body = {"external_id": f"t-{template_type}", "contacts": [contact(phones(1)[0], **extra)]}
        response = api.post(f"/api/v1/billing/send/{template_type}", json=body, headers=api.headers)
        assert response.status_code == 200, response.json
        assert Campaign.get_by_id(response.json["billing_campaign_id"]).type == template_type
    response = api.post("/api/v1/billing/send/other", json={"external_id": "x", "contacts": [contact()]}, headers=api.headers)
    assert response.status_code == 404 and "unknown message type 'other'" in response.json["message"]


def test_repeated_external_id_answers_409_with_the_existing_ids(api):
    first = api.post("/api/v1/billing/send/overdue", json=SEED_002_BODY, headers=api.headers).json
    again = api.post("/api/v1/billing/send/overdue", json=SEED_002_BODY, headers=api.headers)
    assert again.status_code == 409
    assert again.json["success"] is False
    assert again.json["billing_campaign_id"] == first["billing_campaign_id"]
    assert again.json["queue_id"] == first["queue_id"]
    assert Campaign.select().count() == 1 and len(api.started) == 1


@pytest.mark.parametrize(
    "headers, message",
    [({}, "missing API key"), ({"X-Billing-API-Key": "nope"}, "invalid API key"), ({"X-Billing-API-Key": "bk_000000000000_x"}, "invalid API key")],
)
def test_bad_keys_get_401_json(api, headers, message):
    response = api.post("/api/v1/billing/send/overdue", json=SEED_001_BODY, headers=headers)
    assert response.status_code == 401 and response.is_json
    assert message in response.json["message"] and response.json["success"] is False


def test_revoked_key_and_scoped_key(api):
    ApiKey.update(revoked_at=ApiKey.created_at).execute()
    response = api.post("/api/v1/billing/send/overdue", json=SEED_001_BODY, headers=api.headers)
    assert response.status_code == 401 and "revoked" in response.json["message"]
    scoped = apikeys.issue_key(api.setup.tenant, types="notification")
    response = api.post("/api/v1/billing/send/overdue", json=SEED_001_BODY, headers={"X-Billing-API-Key": scoped.secret})
    assert response.status_code == 403


def test_keys_are_stored_as_hashes_only(api):
    stored = ApiKey.get()
    assert api.setup.api_key not in (stored.key_hash, stored.prefix, stored.name)
    assert len(stored.key_hash) == 64


def test_another_tenants_ids_are_not_found(api):
    created = api.post("/api/v1/billing/send/overdue", json=SEED_002_BODY, headers=api.headers).json
    other = make_tenant("other")
    headers = {"X-Billing-API-Key": other.api_key}
    assert api.get(f"/api/v1/billing/queue/{created['queue_id']}/status", headers=headers).status_code == 404
    assert api.post(f"/api/v1/billing/queue/{created['queue_id']}/control", json={"action": "cancel"}, headers=headers).status_code == 404
    assert api.get(f"/api/v1/billing/campaign/{created['billing_campaign_id']}/contacts", headers=headers).status_code == 404
    status = api.get(f"/api/v1/billing/queue/{created['queue_id']}/status", headers=api.headers).json
    assert status["status"] == "pending"  # untouched


@pytest.mark.parametrize(
    "data, content_type, status, fragment",
    [
        # Not JSON at all is a 400; JSON that does not validate stays a 422.
        ("{not json", "application/json", 400, "JSON"),
        ("[1, 2]", "application/json", 422, "JSON object"),
        ('{"external_id": "x"}', "application/json", 422, "contacts"),
        ("external_id=x", "application/x-www-form-urlencoded", 400, "JSON"),
    ],
)
def test_bad_bodies_get_json_errors(api, data, content_type, status, fragment):
    response = api.post("/api/v1/billing/send/overdue", data=data, content_type=content_type, headers=api.headers)
    assert response.status_code == status and response.is_json
    assert fragment in json.dumps(response.json)


def test_too_many_contacts_is_413(api):
    body = {"external_id": "big", "contacts": [contact(p) for p in phones(51)]}
    response = api.post("/api/v1/billing/send/overdue", json=body, headers=api.headers)
    assert response.status_code == 413 and "at most 50" in response.json["message"]


def test_unknown_routes_and_methods_are_json(api):
    response = api.get("/api/v1/billing/nothing", headers=api.headers)
    assert response.status_code == 404 and response.json == {"success": False, "message": "not found"}
    response = api.get("/api/v1/billing/send/overdue", headers=api.headers)
    assert response.status_code == 405 and response.is_json
    assert api.get("/api/v1/billing/queue/not-a-uuid/status", headers=api.headers).status_code == 404


def test_control_pause_resume_cancel(api):
    created = api.post("/api/v1/billing/send/overdue", json=SEED_002_BODY, headers=api.headers).json
    url = f"/api/v1/billing/queue/{created['queue_id']}/control"
    paused = api.post(url, json={"action": "pause"}, headers=api.headers)
    assert paused.status_code == 200 and paused.json["status"] == "paused" and paused.json["pause_reason"] == "Pausado via API"
    resumed = api.post(url, json={"action": "resume"}, headers=api.headers)
    assert resumed.json["status"] == "processing" and api.started == [created["queue_id"]] * 2
    assert api.post(url, json={"action": "cancel"}, headers=api.headers).json["status"] == "cancelled"
    conflict = api.post(url, json={"action": "resume"}, headers=api.headers)
    assert conflict.status_code == 409 and "cancelled" in conflict.json["message"]
    bad = api.post(url, json={"action": "explode"}, headers=api.headers)
    assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "action"


def test_campaign_contacts_are_paginated_with_reasons(api):
    body = {"external_id": "list", "contacts": [contact(p) for p in phones(7)] + [contact("999"), contact("+55 (00) 1234-5678")]}
    created = api.post("/api/v1/billing/send/overdue", json=body, headers=api.headers).json
    url = f"/api/v1/billing/campaign/{created['billing_campaign_id']}/contacts"
    page = api.get(f"{url}?page=2&page_size=4", headers=api.headers).json
    assert page["count"] == 9 and page["pages"] == 3 and [c["index"] for c in page["results"]] == [4, 5, 6, 7]
    rejected = api.get(f"{url}?status=rejected", headers=api.headers).json["results"]
    assert [(c["index"], c["status"]) for c in rejected] == [(7, "rejected"), (8, "rejected")]
    assert all(c["reason"] for c in rejected)
    assert api.get(f"{url}?page=0", headers=api.headers).status_code == 422
    assert api.get(f"{url}?status=weird", headers=api.headers).status_code == 422


def test_request_id_is_echoed(api):
    response = api.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123" and response.json == {"status": "ok"}
