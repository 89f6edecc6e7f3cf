"""Issue 10, points 4 (first half), 9, 10 and 11, on real SQLite and PostgreSQL:
operator-only settings and ceilings, admin tokens listed and revoked, failed
authentications slowed down per address, API-key scopes over reads and
controls, and WAHA's signed webhooks checked for freshness and replays."""
from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import pytest

from billing import apikeys, campaigns, ceilings, limits, tenants, webhook_replays
from billing.adapters import migrations
from billing.adapters.db import database
from billing.adapters.models import AdminToken, ApiKey, Campaign, Instance, Queue, RateCounter, Tenant, WebhookDelivery
from billing.adapters.providers.base import CONNECTED, DOWN
from billing.adapters.providers.webhooks import BAD_CREDENTIALS
from billing.clock import frozen, utcnow
from billing.config import DEFAULT_FAILED_AUTH_LIMIT, Settings
from billing.domain.states import QueueStatus
from billing.errors import InvalidRequest
from tests.factories import RecordedJobs, contact, make_tenant, phones
from tests.fakes import waha as wa
from tests.inprocess_support import Cli, one_error_line
from web import create_app

OPERATOR = "op-" + "z" * 40
ADMIN = "/api/v1/admin"
API = "/api/v1/billing"
LIMIT = DEFAULT_FAILED_AUTH_LIMIT


def _client(db, **settings):
    return create_app(Settings(database_url=db, admin_token=OPERATOR, **settings), jobs=RecordedJobs()).test_client()


def _operator(tenant_name: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {OPERATOR}"}
    return {**headers, "X-Billing-Tenant": tenant_name} if tenant_name else headers


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def acme(db):
    """A tenant, its admin token's header, and an app that knows the operator's token."""
    setup = make_tenant()
    _, token = apikeys.issue_admin_token(setup.tenant, name="main")
    return setup, _bearer(token), _client(db)


# --- 4. allowing private callback URLs is the operator's decision ----------------

def test_only_the_operator_allows_private_callback_urls(acme):
    setup, auth, client = acme

    refused = client.patch(f"{ADMIN}/settings", headers=auth, json={"daily_cap": 5, "allow_private_callbacks": True})
    assert refused.status_code == 403 and refused.json["success"] is False
    assert refused.json["message"].startswith("allow_private_callbacks: ") and "operator" in refused.json["message"]
    row = Tenant.get_by_id(setup.tenant.id)
    assert (row.allow_private_callbacks, row.daily_cap) == (False, 0)  # nothing half-written

    allowed = client.patch(f"{ADMIN}/settings", headers=_operator("acme"), json={"allow_private_callbacks": True})
    assert allowed.status_code == 200 and allowed.json["allow_private_callbacks"] is True
    assert client.get(f"{ADMIN}/settings", headers=auth).json["allow_private_callbacks"] is True  # reads still show it
    # Turning the guard back on is anyone's to do.
    back_on = client.patch(f"{ADMIN}/settings", headers=auth, json={"allow_private_callbacks": False})
    assert back_on.status_code == 200 and Tenant.get_by_id(setup.tenant.id).allow_private_callbacks is False


# --- 9. admin tokens are listed and revoked --------------------------------------

def test_admin_tokens_are_listed_without_secrets_and_revoked_within_their_tenant(acme):
    setup, auth, client = acme
    ci_row, ci = apikeys.issue_admin_token(setup.tenant, name="ci")
    other = make_tenant("other")
    other_row, other_token = apikeys.issue_admin_token(other.tenant, name="theirs")

    listed = client.get(f"{ADMIN}/admin-tokens", headers=auth)
    assert listed.status_code == 200
    assert [(t["tenant"], t["name"]) for t in listed.json["results"]] == [("acme", "main"), ("acme", "ci")]
    assert listed.json["results"][1]["prefix"] == f"bat_{ci_row.prefix}" and ci.split("_", 2)[2] not in listed.text
    assert set(listed.json["results"][0]) == {"id", "tenant", "name", "prefix", "created_at", "last_used_at",
                                              "revoked_at"}
    assert listed.json["results"][0]["last_used_at"] is not None  # the caller's own token was just used

    assert client.delete(f"{ADMIN}/admin-tokens/{other_row.id}", headers=auth).status_code == 404
    assert client.get(f"{ADMIN}/settings", headers=_bearer(other_token)).status_code == 200

    revoked = client.delete(f"{ADMIN}/admin-tokens/{ci_row.id}", headers=auth)
    assert revoked.status_code == 200 and revoked.json["revoked_at"] is not None
    again = client.delete(f"{ADMIN}/admin-tokens/{ci_row.id}", headers=auth)
    assert again.json["revoked_at"] == revoked.json["revoked_at"]
    refused = client.get(f"{ADMIN}/settings", headers=_bearer(ci))
    assert (refused.status_code, refused.json["message"]) == (401, "admin token revoked")

    everyone = client.get(f"{ADMIN}/admin-tokens", headers=_operator()).json["results"]
    assert [t["name"] for t in everyone] == ["main", "ci", "theirs"]
    theirs = client.get(f"{ADMIN}/admin-tokens", headers=_operator("other")).json["results"]
    assert [t["name"] for t in theirs] == ["theirs"]
    assert client.delete(f"{ADMIN}/admin-tokens/{other_row.id}", headers=_operator()).status_code == 200
    assert client.get(f"{ADMIN}/settings", headers=_bearer(other_token)).status_code == 401
    assert client.delete(f"{ADMIN}/admin-tokens/{2**63}", headers=_operator()).status_code == 404


@pytest.fixture
def cli(db, monkeypatch):
    monkeypatch.delenv("BROKER_URL", raising=False)
    return Cli(database_url=db, monkeypatch=monkeypatch)


def test_admin_token_list_and_revoke_on_the_command_line(cli):
    cli("tenant", "create", "acme")
    cli("tenant", "create", "other")
    secret = cli("admin-token", "create", "--tenant", "acme", "--name", "ci").stdout.splitlines()[-1]
    cli("admin-token", "create", "--tenant", "other")
    row = AdminToken.get(AdminToken.name == "ci")

    listed = cli("admin-token", "list", "--tenant", "acme").stdout.splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"bat_{row.prefix}  tenant acme  name ci  created ")
    assert listed[0].endswith("last used never  active") and secret not in listed[0]
    assert len(cli("admin-token", "list").stdout.splitlines()) == 2

    assert cli("admin-token", "revoke", "--tenant", "acme", f"bat_{row.prefix}").stdout.strip() == f"revoked bat_{row.prefix}"
    assert " revoked 20" in cli("admin-token", "list", "--tenant", "acme").stdout
    with pytest.raises(Exception, match="revoked"):
        apikeys.authenticate_admin(secret)
    other_prefix = AdminToken.get(AdminToken.name == "").prefix
    wrong_tenant = cli("admin-token", "revoke", "--tenant", "acme", other_prefix, ok=False)
    assert one_error_line(wrong_tenant) == "Error: admin token not found"
    cli("tenant", "create", "empty")
    assert cli("admin-token", "list", "--tenant", "empty").stdout.strip() == "no admin tokens"


# --- 9. repeated failed authentication from one address is slowed down ------------

@pytest.fixture
def mid_window():
    """The clock held 30 s into a failure window, so the window cannot end mid-test."""
    start, _ = limits.failure_window(utcnow())
    moment = start + timedelta(seconds=30)
    with frozen(lambda: moment):
        yield moment


def _blocked(response) -> bool:
    return response.status_code == 429 and response.json["success"] is False and "Retry-After" in response.headers


def test_failed_api_keys_block_the_address_until_the_window_ends_even_for_a_right_key(db, mid_window):
    setup = make_tenant()
    client, twin = _client(db), _client(db)  # two web processes share the count through the database
    wrong = {"X-Billing-API-Key": "bk_000000000000_guess"}
    for _ in range(LIMIT):
        assert client.get(f"{API}/queue/{uuid.uuid4()}/status", headers=wrong).status_code == 401

    right = {"X-Billing-API-Key": setup.api_key}
    blocked = twin.post(f"{API}/send/overdue", headers=right, json={"external_id": "b", "contacts": [contact()]})
    assert _blocked(blocked) and int(blocked.headers["Retry-After"]) == 270
    assert "failed authentications" in blocked.json["message"] and Campaign.select().count() == 0
    elsewhere = client.get(f"{API}/queue/{uuid.uuid4()}/status", headers=right,
                           environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert elsewhere.status_code == 404  # another address is not blocked

    with frozen(lambda: mid_window + limits.FAILED_AUTH_WINDOW):
        assert client.get(f"{API}/queue/{uuid.uuid4()}/status", headers=right).status_code == 404


def test_failed_admin_tokens_and_webhook_secrets_count_against_the_same_address(db, mid_window):
    setup = make_tenant()
    client = _client(db)
    half = LIMIT // 2
    for _ in range(half):
        assert client.get(f"{ADMIN}/settings", headers=_bearer("bat_000000000000_guess")).status_code == 401
    for _ in range(LIMIT - half):
        assert client.post(f"/webhooks/evolution/{2**40}/guess", json={}).status_code == 401  # no such instance

    assert _blocked(client.get(f"{ADMIN}/tenants", headers=_operator()))
    assert _blocked(client.get(f"{ADMIN}/settings", headers=_bearer(apikeys.issue_admin_token(setup.tenant)[1])))


def test_failed_webhook_secrets_block_the_webhooks_too(db, mid_window):
    client = _client(db)
    instance = tenants.create_instance(make_tenant().tenant, name="evo", provider="evolution", url="http://127.0.0.1:9")
    body = {"event": "connection.update", "instance": "evo", "data": {"state": "open"}}
    for _ in range(LIMIT):
        assert client.post(f"/webhooks/evolution/{instance.id}/guess", json=body).status_code == 401
    assert _blocked(client.post(f"/webhooks/evolution/{instance.id}/{instance.webhook_secret}", json=body))


def test_a_zero_failed_auth_limit_turns_the_throttle_off(db, mid_window):
    client = _client(db, failed_auth_limit=0)
    for _ in range(LIMIT + 1):
        assert client.get(f"{ADMIN}/settings", headers=_bearer("bat_000000000000_guess")).status_code == 401
    assert not RateCounter.select().where(RateCounter.key.startswith("authfail:")).exists()


# --- 10. an API key's scope covers what it reads and controls ------------------------

def test_a_key_scoped_to_overdue_cannot_read_or_control_a_notification_queue(db):
    setup = make_tenant()
    client = _client(db)
    notice = campaigns.create_campaign(setup.tenant, template_type="notification", request={
        "external_id": "n1", "contacts": [contact(phones(1)[0], mensagem="Aviso")]})
    charge = campaigns.create_campaign(setup.tenant, template_type="overdue", request={
        "external_id": "o1", "contacts": [contact(phones(1, start=1)[0])]})
    overdue_only = {"X-Billing-API-Key": apikeys.issue_key(setup.tenant, name="erp", types=["overdue"]).secret}
    every_type = {"X-Billing-API-Key": setup.api_key}
    absent_queue = client.get(f"{API}/queue/{uuid.uuid4()}/status", headers=overdue_only)
    absent_campaign = client.get(f"{API}/campaign/{uuid.uuid4()}/contacts", headers=overdue_only)

    for prefix in ("/api/v1/billing", "/api/billing/v1/billing"):
        status = client.get(f"{prefix}/queue/{notice.queue_id}/status", headers=overdue_only)
        cancel = client.post(f"{prefix}/queue/{notice.queue_id}/control", headers=overdue_only, json={"action": "cancel"})
        people = client.get(f"{prefix}/campaign/{notice.campaign_id}/contacts", headers=overdue_only)
        # As if it did not exist: the same answers as an id nobody has.
        assert (status.status_code, status.json) == (404, absent_queue.json)
        assert (cancel.status_code, cancel.json) == (404, absent_queue.json)
        assert (people.status_code, people.json) == (404, absent_campaign.json)
    assert Queue.get_by_id(notice.queue_id).status != QueueStatus.CANCELLED
    # An external_id taken by a campaign the key cannot see: 409 without that campaign's ids.
    hidden = client.post(f"{API}/send/overdue", headers=overdue_only, json={"external_id": "n1", "contacts": [contact()]})
    assert hidden.status_code == 409 and "billing_campaign_id" not in hidden.json and "queue_id" not in hidden.json
    assert notice.campaign_id not in hidden.text and "may not use" in hidden.json["message"]
    seen = client.post(f"{API}/send/overdue", headers=overdue_only, json={"external_id": "o1", "contacts": [contact()]})
    assert (seen.status_code, seen.json["billing_campaign_id"]) == (409, charge.campaign_id)
    every = client.post(f"{API}/send/overdue", headers=every_type, json={"external_id": "n1", "contacts": [contact()]})
    assert (every.status_code, every.json["queue_id"]) == (409, notice.queue_id)

    assert client.get(f"{API}/queue/{charge.queue_id}/status", headers=overdue_only).status_code == 200
    assert client.get(f"{API}/campaign/{charge.campaign_id}/contacts", headers=overdue_only).json["count"] == 1
    assert client.get(f"{API}/campaign/{notice.campaign_id}/contacts", headers=every_type).json["count"] == 1
    cancelled = client.post(f"{API}/queue/{notice.queue_id}/control", headers=every_type, json={"action": "cancel"})
    assert cancelled.status_code == 200 and Queue.get_by_id(notice.queue_id).status == QueueStatus.CANCELLED


# --- 10. a tenant admin cannot raise its limits beyond the operator's ceilings -------

def test_tenant_admins_stay_under_the_operators_ceilings(acme):
    setup, auth, client = acme
    assert client.get(f"{ADMIN}/settings", headers=auth).json["ceilings"] == ceilings.DEFAULT_CEILINGS

    above = client.patch(f"{ADMIN}/settings", headers=auth, json={"api_hourly_limit": 5_000, "timezone": "UTC"})
    assert above.status_code == 403
    assert above.json["message"] == "api_hourly_limit 5000 is above the ceiling of 1000 the operator set for this tenant"
    assert (Tenant.get_by_id(setup.tenant.id).api_hourly_limit, Tenant.get_by_id(setup.tenant.id).timezone) == (
        1_000, "America/Sao_Paulo")
    assert client.patch(f"{ADMIN}/settings", headers=auth, json={"api_hourly_limit": 500}).status_code == 200
    key = client.post(f"{ADMIN}/api-keys", headers=auth, json={"name": "fast", "hourly_limit": 2_000})
    assert key.status_code == 403 and "key_hourly_limit 2000 is above the ceiling of 1000" in key.json["message"]
    assert not ApiKey.select().where(ApiKey.name == "fast").exists()
    assert client.post(f"{ADMIN}/api-keys", headers=auth, json={"hourly_limit": 1_000}).status_code == 201

    assert client.patch(f"{ADMIN}/settings/ceilings", headers=auth, json={"daily_cap": 9}).status_code == 403
    raised = client.patch(f"{ADMIN}/settings/ceilings", headers=_operator("acme"),
                          json={"api_hourly_limit": 5_000, "daily_cap": 100, "daily_message_limit": 300})
    assert raised.status_code == 200 and raised.json["ceilings"] == {
        "api_hourly_limit": 5_000, "key_hourly_limit": 1_000, "daily_message_limit": 300, "daily_cap": 100}

    assert client.patch(f"{ADMIN}/settings", headers=auth, json={"api_hourly_limit": 5_000}).status_code == 200
    for change, words in (({"daily_cap": 101}, "daily_cap 101 is above the ceiling of 100"),
                          ({"daily_cap": 0}, "daily_cap 0 (no limit) is above the ceiling of 100"),
                          ({"daily_message_limit": 301}, "daily_message_limit 301 is above the ceiling of 300")):
        refused = client.patch(f"{ADMIN}/settings", headers=auth, json=change)
        assert refused.status_code == 403 and words in refused.json["message"]
    assert client.patch(f"{ADMIN}/settings", headers=auth, json={"daily_cap": 100}).json["daily_cap"] == 100

    # The operator is not bound by the ceilings, and may set one back to its default.
    assert client.patch(f"{ADMIN}/settings", headers=_operator("acme"), json={"daily_cap": 0}).json["daily_cap"] == 0
    assert client.post(f"{ADMIN}/api-keys", headers=_operator("acme"), json={"hourly_limit": 2_000}).status_code == 201
    reset = client.patch(f"{ADMIN}/settings/ceilings", headers=_operator("acme"), json={"api_hourly_limit": None})
    assert reset.json["ceilings"]["api_hourly_limit"] == 1_000
    for bad in ({"api_hourly_limit": 0}, {"api_hourly_limit": True}, {"hourly": 5}):
        assert client.patch(f"{ADMIN}/settings/ceilings", headers=_operator("acme"), json=bad).status_code == 422
    assert client.patch(f"{ADMIN}/settings/ceilings", headers=_operator(), json={"daily_cap": 1}).status_code == 401


def test_ceilings_refuse_unknown_limits_and_non_numbers(db):
    tenant = make_tenant().tenant
    for changes in ({"hourly": 5}, {"daily_cap": True}, {"daily_cap": ceilings.MAX_CEILING + 1}):
        with pytest.raises(InvalidRequest):
            ceilings.set_ceilings(tenant, changes)
    assert Tenant.get_by_id(tenant.id).ceilings == {}


def test_ceilings_on_the_command_line(cli):
    cli("tenant", "create", "acme")
    shown = cli("tenant", "ceilings", "acme").stdout.strip()
    assert shown == ("tenant acme ceilings: api_hourly_limit 1000, key_hourly_limit 1000, daily_message_limit none, "
                     "daily_cap none")
    raised = cli("tenant", "ceilings", "acme", "--api-hourly-limit", "5000", "--daily-cap", "50").stdout.strip()
    assert "api_hourly_limit 5000" in raised and "daily_cap 50" in raised
    reset = cli("tenant", "ceilings", "acme", "--api-hourly-limit", "0").stdout.strip()
    assert "api_hourly_limit 1000" in reset and "daily_cap 50" in reset
    assert one_error_line(cli("tenant", "ceilings", "nobody", ok=False)) == "Error: no tenant named 'nobody'"
    # The operator's CLI allows private callbacks (tenant admins cannot).
    cli("tenant", "update", "acme", "--allow-private-callbacks")
    assert Tenant.get(Tenant.name == "acme").allow_private_callbacks is True


# --- 11. WAHA's signed webhooks: freshness and replays; unknown ids look like wrong secrets ---

@pytest.fixture
def waha(db):
    """A WAHA instance (session ``default``) and an app to post its webhooks to."""
    setup = make_tenant()
    instance = tenants.create_instance(setup.tenant, name="default", provider="waha", url="http://127.0.0.1:9",
                                       token="k")
    return instance, _client(db)


def _signed(instance, body: dict, *, header_ms: int | None = None, drop: tuple[str, ...] = ()) -> tuple[bytes, dict]:
    raw = json.dumps(body).encode()
    headers = wa.signature_headers(raw, secret=instance.webhook_secret, request_id=str(body.get("id", "")),
                                   timestamp_ms=header_ms if header_ms is not None else int(body.get("timestamp", 0)))
    headers = {k: v for k, v in headers.items() if k not in drop}
    return raw, {"Content-Type": "application/json", **headers}


def _status(status: str, **fields) -> dict:
    return {**wa.session_status_body(session="default", status=status), **fields}


def _post(client, instance, raw: bytes, headers: dict, *, signed_url: bool = False):
    url = f"/webhooks/waha/{instance.id}" if signed_url else f"/webhooks/waha/{instance.id}/{instance.webhook_secret}"
    return client.post(url, data=raw, headers=headers)


def _health(instance) -> str:
    return Instance.get_by_id(instance.id).health


def test_a_replayed_signed_event_applies_nothing_again_in_any_web_process(waha, db):
    instance, client = waha
    stopped = _signed(instance, _status("STOPPED"))
    working = _signed(instance, _status("WORKING"))

    assert _post(client, instance, *stopped).json == {"success": True, "events": 1}
    assert _health(instance) == DOWN
    assert _post(client, instance, *working).json == {"success": True, "events": 1}
    assert _health(instance) == CONNECTED
    twin = _client(db)
    for app, signed_url in ((client, False), (twin, False), (twin, True)):
        replay = _post(app, instance, *stopped, signed_url=signed_url)
        assert (replay.status_code, replay.json) == (200, {"success": True, "events": 0})
    assert _health(instance) == CONNECTED
    assert WebhookDelivery.select().count() == 2
    # Unsigned (WAHA Core) bodies carry no event id: each is applied.
    core = wa.session_status_body(session="default", status="STOPPED", core=True)
    assert _post(client, instance, json.dumps(core).encode(), {"Content-Type": "application/json"}).json["events"] == 1
    assert _health(instance) == DOWN


def test_a_signed_event_whose_time_is_more_than_five_minutes_off_is_refused(waha):
    instance, client = waha
    now_ms = int(time.time() * 1000)
    minute = 60_000
    refused = {
        "header-old": _signed(instance, _status("STOPPED"), header_ms=now_ms - 6 * minute),
        "header-ahead": _signed(instance, _status("STOPPED"), header_ms=now_ms + 6 * minute),
        "body-old": _signed(instance, _status("STOPPED", timestamp=now_ms - 6 * minute), header_ms=now_ms),
        "unreadable": _signed(instance, _status("STOPPED", timestamp="soon"), header_ms=now_ms),
        "none": _signed(instance, {k: v for k, v in _status("STOPPED").items() if k != "timestamp"},
                        drop=("X-Webhook-Timestamp",)),
    }
    for name, (raw, headers) in refused.items():
        answer = _post(client, instance, raw, headers)
        assert answer.status_code == 401, name
    assert "more than 5 minutes" in _post(client, instance, *refused["header-old"]).json["message"]
    assert "must carry its timestamp" in _post(client, instance, *refused["none"]).json["message"]
    assert _health(instance) != DOWN and WebhookDelivery.select().count() == 0

    late = _signed(instance, _status("STOPPED", timestamp=now_ms - 4 * minute), header_ms=now_ms - 4 * minute)
    assert _post(client, instance, *late).json == {"success": True, "events": 1}
    assert _health(instance) == DOWN


def test_a_signed_event_that_fails_is_forgotten_so_a_retry_is_applied(waha):
    instance, client = waha
    foreign = _signed(instance, {**_status("STOPPED"), "session": "someone-else"})
    assert _post(client, instance, *foreign).status_code == 403
    assert WebhookDelivery.select().count() == 0


def test_event_ids_are_kept_only_as_long_as_a_replay_could_pass_the_time_check(waha):
    instance, _ = waha
    start = utcnow()
    assert webhook_replays.first_delivery(instance.id, "evt_1", now=start)
    assert not webhook_replays.first_delivery(instance.id, "evt_1", now=start + timedelta(seconds=1))
    assert webhook_replays.first_delivery(instance.id, "x" * 5_000, now=start)  # any length fits
    assert webhook_replays.RETENTION > 2 * webhook_replays.MAX_SKEW
    later = start + webhook_replays.RETENTION + timedelta(seconds=1)
    assert webhook_replays.first_delivery(instance.id, "evt_2", now=later)
    assert WebhookDelivery.select().count() == 1  # the old ids went


def test_an_unknown_instance_is_answered_like_a_wrong_secret(waha):
    instance, client = waha
    evolution = tenants.create_instance(instance.tenant, name="evo", provider="evolution", url="http://127.0.0.1:9")
    body = _status("WORKING")
    raw, headers = _signed(instance, body)
    answers = [
        client.post(f"/webhooks/waha/{instance.id}/wrong", json=body),
        client.post(f"/webhooks/waha/{instance.id + 1000}/{instance.webhook_secret}", json=body),
        client.post(f"/webhooks/waha/{evolution.id}/{evolution.webhook_secret}", json=body),  # another provider's id
        client.post(f"/webhooks/waha/{2**63}/x", json=body),
        client.post(f"/webhooks/waha/{instance.id}", data=raw, headers={**headers, "X-Webhook-Hmac": "00" * 64}),
        client.post(f"/webhooks/waha/{instance.id + 1000}", data=raw, headers=headers),
    ]
    assert {(a.status_code, json.dumps(a.json, sort_keys=True)) for a in answers} == {
        (401, json.dumps({"success": False, "message": BAD_CREDENTIALS}, sort_keys=True))}


# --- migration 0005 ------------------------------------------------------------------------

def test_migration_5_adds_the_ceilings_and_the_received_events(db):
    from playhouse.migrate import migrate

    migrator = migrations._migrator()
    migrate(migrator.drop_column(Tenant._meta.table_name, "ceilings"))
    database.drop_tables([WebhookDelivery])
    migrations.SchemaMigration.delete().where(migrations.SchemaMigration.version == 5).execute()

    assert [m.version for m in migrations.upgrade()] == [5]
    assert "ceilings" in {c.name for c in database.get_columns(Tenant._meta.table_name)}
    assert database.table_exists(WebhookDelivery._meta.table_name)
    assert migrations.upgrade() == []
