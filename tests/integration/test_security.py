"""API keys, limits, idempotency, headers and logs, on real SQLite and
PostgreSQL; and a walk over every route proving tenants cannot see or touch
each other's data."""
from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stderr
from datetime import timedelta

import pytest
import structlog

from billing import apikeys, campaigns, tenants
from billing.adapters.models import ALL_MODELS, ApiKey, Campaign, RateCounter, Template
from billing.clock import utcnow
from billing.config import Settings
from billing.logconfig import configure_logging
from tests.factories import RecordedJobs, contact, make_tenant, phones
from web import create_app

OPERATOR = "op-" + "y" * 40
SEND = "/api/v1/billing/send/overdue"


def _client(db, **settings):
    app = create_app(Settings(database_url=db, admin_token=OPERATOR, **settings), jobs=RecordedJobs())
    return app.test_client()


def _body(external_id="k1", **extra):
    return {"external_id": external_id, "contacts": [contact(phones(1)[0], **extra)]}


def test_the_database_holds_no_key_in_plaintext(db):
    setup = make_tenant()
    _, admin_secret = apikeys.issue_admin_token(setup.tenant)
    dump = []
    for model in ALL_MODELS:
        for row in model.select().dicts():
            dump.append(json.dumps(row, default=str))
    text = "\n".join(dump)
    secret_part = setup.api_key.split("_", 2)[2]
    assert setup.api_key not in text and secret_part not in text
    assert admin_secret not in text and admin_secret.split("_", 2)[2] not in text


@pytest.mark.parametrize(
    "change, status, message",
    [
        ({"revoked_at": utcnow()}, 401, "API key revoked"),
        ({"expires_at": utcnow() - timedelta(seconds=1)}, 401, "API key expired"),
        ({"allowed_ips": ["203.0.113.0/24"]}, 403, "API key not allowed from this address"),
        ({"message_types": ["notification"]}, 403, "this API key may not send 'overdue' messages"),
    ],
    ids=["revoked", "expired", "wrong-ip", "wrong-scope"],
)
def test_key_states_have_distinct_answers(db, change, status, message):
    client = _client(db)
    setup = make_tenant()
    ApiKey.update(**change).execute()
    response = client.post(SEND, json=_body(), headers={"X-Billing-API-Key": setup.api_key})
    assert (response.status_code, response.json["message"]) == (status, message)
    assert Campaign.select().count() == 0


def test_ip_allowlist_with_trusted_proxies(db):
    setup = make_tenant()
    ApiKey.update(allowed_ips=["203.0.113.7/32"]).execute()
    headers = {"X-Billing-API-Key": setup.api_key, "X-Forwarded-For": "203.0.113.7"}
    untrusting = _client(db)
    assert untrusting.post(SEND, json=_body(), headers=headers).status_code == 403  # a header anyone can send
    trusting = _client(db, trusted_proxies=("127.0.0.0/8",))
    assert trusting.post(SEND, json=_body(), headers=headers).status_code == 200
    spoofed = {**headers, "X-Forwarded-For": "203.0.113.7, 198.51.100.9"}  # the proxy appended the real peer
    assert trusting.post(SEND, json=_body("k2"), headers=spoofed).status_code == 403
    assert ApiKey.get().last_used_ip == "203.0.113.7"


def test_hourly_limit_answers_429_with_headers(db):
    client = _client(db)
    setup = make_tenant()
    ApiKey.update(hourly_limit=3).execute()
    headers = {"X-Billing-API-Key": setup.api_key}
    answers = [client.get("/api/v1/billing/queue/00000000-0000-0000-0000-000000000000/status", headers=headers) for _ in range(5)]
    assert [a.status_code for a in answers] == [404, 404, 404, 429, 429]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0", "0"]
    limited = answers[-1]
    assert limited.headers["X-RateLimit-Limit"] == "3" and 1 <= int(limited.headers["Retry-After"]) <= 3600
    assert limited.json["success"] is False and "limit" in limited.json["message"]


def test_daily_message_limit_counts_contacts(db):
    client = _client(db)
    setup = make_tenant()
    tenants.update_tenant(setup.tenant, daily_message_limit=5)
    headers = {"X-Billing-API-Key": setup.api_key}
    first = client.post(SEND, json={"external_id": "a", "contacts": [contact(p) for p in phones(4)]}, headers=headers)
    assert first.status_code == 200
    second = client.post(SEND, json={"external_id": "b", "contacts": [contact(p) for p in phones(2, start=10)]}, headers=headers)
    assert second.status_code == 429 and "daily messages" in second.json["message"] and second.headers["Retry-After"]
    assert Campaign.select().count() == 1  # nothing of the refused request was kept
    third = client.post(SEND, json={"external_id": "c", "contacts": [contact(phones(1, start=20)[0])]}, headers=headers)
    assert third.status_code == 200


def test_idempotency_key_replays_and_refuses_a_different_body(db):
    client = _client(db)
    setup = make_tenant()
    headers = {"X-Billing-API-Key": setup.api_key, "Idempotency-Key": "req-1"}
    first = client.post(SEND, json=_body("i1"), headers=headers)
    again = client.post(SEND, json=_body("i1"), headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert Campaign.select().count() == 1
    other = client.post(SEND, json=_body("i2"), headers=headers)
    assert other.status_code == 422 and "different request" in other.json["message"]
    # a 4xx is a final answer and is replayed too; another key runs anew
    bad = {**headers, "Idempotency-Key": "req-2"}
    assert client.post(SEND, json={"external_id": "x"}, headers=bad).status_code == 422
    assert client.post(SEND, json={"external_id": "x"}, headers=bad).headers.get("Idempotent-Replayed") == "true"


def test_security_headers_on_every_response(db):
    client = _client(db)
    for response in (client.get("/health"), client.get("/nope"), client.post(SEND, json={})):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["Cache-Control"] == "no-store"
        assert response.is_json


def test_logs_hold_no_keys_pix_codes_or_phones(db):
    configure_logging(log_format="json", level="INFO")
    client = _client(db)
    setup = make_tenant()
    pix = "00020126580014br.gov.bcb.pix0136123e4567-e12b-12d1-a456-4266554400005204000053039865802BR"
    buffer = io.StringIO()
    with redirect_stderr(buffer):
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer))
        headers = {"X-Billing-API-Key": setup.api_key}
        client.post(SEND, json={"external_id": "log", "contacts": [contact("+5511987654321", codigo_pix=pix)]}, headers=headers)
        client.post(SEND, json={"external_id": "log", "contacts": [contact("+5511987654321")]}, headers=headers)
        log = structlog.get_logger("test")
        log.info("leaky", api_key=setup.api_key, phone="+5511987654321", codigo_pix=pix,
                 note=f"key {setup.api_key} phone +5511987654321 secret {setup.tenant.callback_secret}")
    configure_logging(log_format="console", level="INFO")
    text = buffer.getvalue()
    assert "leaky" in text and "request" in text
    assert setup.api_key not in text and setup.api_key.split("_", 2)[2] not in text
    assert "987654321" not in text and pix not in text and pix[:30] not in text
    assert setup.tenant.callback_secret not in text
    assert "+55 11 *****-4321" in text


# --- tenant isolation -------------------------------------------------------

def _fill(url_params: dict, rule) -> str:
    path = rule.rule
    for name in rule.arguments:
        path = re.sub(rf"<(?:[a-z]+:)?{name}>", str(url_params[name]), path)
    return path


def _snapshot() -> str:
    rows = []
    for model in ALL_MODELS:
        if model is RateCounter:  # the caller's own request count
            continue
        for row in model.select().order_by(*model._meta.get_primary_keys()).dicts():
            row.pop("last_used_at", None)  # the caller's own key is touched on use
            row.pop("last_used_ip", None)
            rows.append(json.dumps(row, default=str, sort_keys=True))
    return "\n".join(rows)


def test_no_route_lets_tenant_b_see_or_touch_tenant_a(db):
    client = _client(db)
    a = make_tenant("tenant-a")
    created = campaigns.create_campaign(a.tenant, template_type="overdue", request=_body("a1"))
    a_ids = {
        "queue_id": created.queue_id, "campaign_id": created.campaign_id,
        "template_id": Template.get(Template.tenant == a.tenant.id).id, "instance_id": a.instance.id,
        "key_id": ApiKey.get(ApiKey.tenant == a.tenant.id).id, "secret": "wrong",
        "template_type": "overdue", "token_id": apikeys.issue_admin_token(a.tenant)[0].id,
    }
    b = make_tenant("tenant-b")
    _, b_admin = apikeys.issue_admin_token(b.tenant)
    b_headers = {"X-Billing-API-Key": b.api_key, "Authorization": f"Bearer {b_admin}"}
    bodies = {"POST": {"action": "cancel"}, "PATCH": {"name": "stolen", "is_active": False}, "DELETE": None}
    before = _snapshot()
    walked = 0
    for rule in client.application.url_map.iter_rules():
        ids = [arg for arg in rule.arguments if arg != "template_type"]
        if not ids or rule.rule.startswith("/webhooks"):
            continue
        path = _fill(a_ids, rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = client.open(path, method=method, json=bodies.get(method), headers=b_headers)
            assert response.status_code == 404, (method, path, response.status_code, response.json)
            assert response.is_json and response.json["success"] is False
            walked += 1
    assert walked >= 12  # 3 ERP routes under 2 prefixes, 6 admin routes
    assert _snapshot() == before
