"""The outbound guard end to end, on SQLite and PostgreSQL: gateway URLs a
tenant may not make us reach are refused when an instance is created or
changed (admin API and CLI), an existing instance whose URL is no longer
allowed goes down without a connection, a gateway's error body reaches our
log but never the tenant, and callback attempts show no connection detail."""
from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
import structlog
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from billing import callback_log, callbacks, campaigns, dispatch, health, sending, tenants
from billing.adapters import outbound
from billing.adapters.models import CallbackAttempt, CallbackDelivery, Contact, Instance, Tenant
from billing.adapters.providers.base import DOWN
from billing.config import Settings
from billing.domain.states import ContactStatus
from tests.factories import RecordedJobs, admin_client, contact, make_tenant
from tests.fakes import closed_port_url
from tests.inprocess_support import Cli, one_error_line

OPERATOR = "op-" + "x" * 40
#: How far ahead the tests' dispatch books (the production default).
HORIZON = timedelta(seconds=60)
ADMIN = "/api/v1/admin"
#: What a service inside our network might answer; it must never reach a tenant.
SECRET = "db_password=hunter2"
#: Gateway URLs no tenant may set (with the test session's loopback networks allowed), and why.
REFUSED_URLS = [
    ("http://169.254.169.254/latest/meta-data/#", outbound.NOT_ALLOWED),
    ("http://10.0.0.1", outbound.NOT_ALLOWED),
    ("http://100.100.100.200/latest/meta-data", outbound.NOT_ALLOWED),
    ("http://[2002::1]:8080", outbound.NOT_ALLOWED),
    ("http://[::ffff:10.0.0.1]/", outbound.NOT_ALLOWED),
    ("file:///etc/passwd", outbound.BAD_SCHEME),
    ("gopher://127.0.0.1:6379/_INFO", outbound.BAD_SCHEME),
    ("not a url", outbound.NOT_A_URL),
    ("http://no-such-host.invalid:8080", outbound.UNRESOLVED),
    ("http://admin:pw@127.0.0.1:8080", outbound.USERINFO),
]


class Service:
    """A local HTTP server answering every request with ``status`` and
    ``body``, recording the paths it was asked for."""

    def __init__(self, *, status: int = 200, body: str = "{}", content_type: str = "application/json") -> None:
        self.paths: list[str] = []
        self.status, self.body, self.content_type = status, body, content_type
        self.server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _wsgi(self, environ, start_response):
        self.paths.append(Request(environ).path)
        return Response(self.body, status=self.status, content_type=self.content_type)(environ, start_response)

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def service():
    made: list[Service] = []

    def make(**kwargs) -> Service:
        made.append(Service(**kwargs))
        return made[-1]

    yield make
    for item in made:
        item.close()


@pytest.fixture
def admin(db):
    return admin_client(db, operator_token=OPERATOR)


@pytest.fixture
def public_only_gateways():
    """The guard as a deployment without GATEWAY_PRIVATE_NETWORKS has it; the session's networks after."""
    outbound.configure(gateway_private_networks=())
    yield
    outbound.configure(gateway_private_networks=None)  # read from the environment again


def _instance_body(url: str) -> dict:
    return {"name": "gw", "provider": "evolution", "url": url, "token": "t"}


@pytest.mark.parametrize(("url", "reason"), REFUSED_URLS)
def test_gateway_urls_a_tenant_may_not_reach_are_refused_on_create_and_patch(admin, url, reason):
    before = Instance.select().count()
    refused = admin.post(f"{ADMIN}/instances", headers=admin.auth, json=_instance_body(url))
    assert refused.status_code == 422 and refused.json["success"] is False
    assert refused.json["message"].startswith(f"url {reason}") and Instance.select().count() == before

    made = admin.post(f"{ADMIN}/instances", headers=admin.auth, json=_instance_body("http://127.0.0.1:8080/"))
    assert made.status_code == 201 and made.json["url"] == "http://127.0.0.1:8080"
    patched = admin.patch(f"{ADMIN}/instances/{made.json['id']}", headers=admin.auth, json={"url": url})
    assert patched.status_code == 422 and patched.json["message"].startswith(f"url {reason}")
    assert Instance.get_by_id(made.json["id"]).url == "http://127.0.0.1:8080"


def test_a_refusal_does_not_name_the_address_a_name_resolved_to(admin, monkeypatch):
    monkeypatch.setattr(outbound, "resolve", lambda host, port: ["10.20.30.40"])
    refused = admin.post(f"{ADMIN}/instances", headers=admin.auth, json=_instance_body("http://db.internal:5984"))
    assert refused.status_code == 422 and "GATEWAY_PRIVATE_NETWORKS" in refused.json["message"]
    assert "10.20.30.40" not in refused.get_data(as_text=True)


def test_without_the_operators_networks_a_loopback_gateway_is_refused(db, public_only_gateways):
    from web import create_app

    app = create_app(Settings(database_url=db, admin_token=OPERATOR, gateway_private_networks=()), jobs=RecordedJobs())
    client = app.test_client()
    auth = {"Authorization": f"Bearer {OPERATOR}", "X-Billing-Tenant": make_tenant().tenant.name}
    for url in ("http://127.0.0.1:8080", "http://[::1]:8080", "http://localhost:8080"):
        refused = client.post(f"{ADMIN}/instances", headers=auth, json=_instance_body(url))
        assert refused.status_code == 422 and refused.json["message"].startswith(f"url {outbound.NOT_ALLOWED}")
    assert Instance.select().where(Instance.provider == "evolution").count() == 0


def test_the_cli_refuses_them_with_one_readable_line(db, monkeypatch):
    cli = Cli(database_url=db, monkeypatch=monkeypatch)
    cli("tenant", "create", "acme")
    base = ["instance", "create", "--tenant", "acme", "--provider", "waha", "--name", "w", "--url"]
    refused = cli(*base, "http://169.254.169.254/", ok=False)
    assert one_error_line(refused).startswith(f"Error: url {outbound.NOT_ALLOWED}")
    assert one_error_line(cli(*base, "gopher://127.0.0.1:70/", ok=False)) == f"Error: url {outbound.BAD_SCHEME}"
    cli(*base, "http://127.0.0.1:3000/")
    changed = cli("instance", "update", "--tenant", "acme", "--name", "w", "--url", "file:///etc/passwd", ok=False)
    assert one_error_line(changed) == f"Error: url {outbound.BAD_SCHEME}"
    assert Instance.get(Instance.name == "w").url == "http://127.0.0.1:3000"


def _one_contact_campaign(setup) -> int:
    created = campaigns.create_campaign(setup.tenant, template_type="overdue",
                                        request={"external_id": "guard", "contacts": [contact()]})
    (contact_id, _), = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends
    return contact_id


def _operator(db: str, tenant: Tenant):
    """A test client of the app and the operator's headers for ``tenant``."""
    from web import create_app

    client = create_app(Settings(database_url=db, admin_token=OPERATOR), jobs=RecordedJobs()).test_client()
    return client, {"Authorization": f"Bearer {OPERATOR}", "X-Billing-Tenant": tenant.name}


def _gateway_only(setup, url: str) -> Instance:
    """The tenant's sandbox instance retired, an Evolution instance at ``url`` in its place."""
    tenants.update_instance(setup.instance, is_active=False)
    return tenants.create_instance(setup.tenant, name="billing", provider="evolution", url=url, token="t",
                                   options={"typing": False})


def test_an_instance_whose_url_is_no_longer_allowed_goes_down_without_a_connection(db, service, public_only_gateways):
    gateway = service()
    outbound.configure(gateway_private_networks=None)  # the session's networks, from the environment
    setup = make_tenant()
    instance = _gateway_only(setup, gateway.url)  # allowed when it was created
    outbound.configure(gateway_private_networks=())  # the operator narrowed the networks since

    contact_id = _one_contact_campaign(setup)
    sending.send_one(contact_id)
    assert Contact.get_by_id(contact_id).status != ContactStatus.SENT
    row = Instance.get_by_id(instance.id)
    assert row.health == DOWN and f"refused: {outbound.NOT_ALLOWED}" in row.health_reason

    health.record_state(instance.id, "connected")
    health.check(Instance.get_by_id(instance.id))
    row = Instance.get_by_id(instance.id)
    assert row.health == DOWN and row.health_reason.startswith(f"evolution URL '{gateway.url}' refused: ")
    assert gateway.paths == []


@pytest.mark.parametrize(("body", "content_type"), [
    (SECRET, "text/plain"),
    (json.dumps({"config": {"env": SECRET}, "detail": SECRET}), "application/json"),
])
def test_a_gateways_error_body_reaches_our_log_not_the_tenant(db, service, body, content_type):
    internal = service(status=400, body=body, content_type=content_type)
    setup = make_tenant()
    instance = _gateway_only(setup, internal.url)
    contact_id = _one_contact_campaign(setup)
    with structlog.testing.capture_logs() as logs:
        sending.send_one(contact_id)
        health.check(Instance.get_by_id(instance.id))
    assert internal.paths  # the service was asked, and answered its secret
    reason = Contact.get_by_id(contact_id).reason
    assert reason.startswith("evolution 400") and SECRET not in reason
    row = Instance.get_by_id(instance.id)
    assert row.health == DOWN and row.health_reason.startswith("evolution 400") and SECRET not in row.health_reason

    client, operator = _operator(db, setup.tenant)
    campaign_id = Contact.get_by_id(contact_id).campaign_id
    shown = client.get(f"/api/v1/billing/campaign/{campaign_id}/contacts", headers={"X-Billing-API-Key": setup.api_key})
    assert shown.status_code == 200 and reason in shown.get_data(as_text=True) and SECRET not in shown.get_data(as_text=True)
    listed = client.get(f"{ADMIN}/instances", headers=operator)
    assert listed.status_code == 200 and SECRET not in listed.get_data(as_text=True)

    logged = [entry for entry in logs if entry.get("event") == "gateway error answer"]
    assert logged and all(SECRET in entry["gateway_body"] and entry["status"] == 400 for entry in logged)


def test_a_known_message_field_is_quoted_short_and_on_one_line(db, service):
    long_message = "Bad   request:\n" + "x" * 500
    internal = service(status=400, body=json.dumps({"response": {"message": [long_message]}}))
    setup = make_tenant()
    _gateway_only(setup, internal.url)
    contact_id = _one_contact_campaign(setup)
    sending.send_one(contact_id)
    reason = Contact.get_by_id(contact_id).reason
    assert reason.startswith("evolution 400: Bad request: xxx") and "\n" not in reason
    assert len(reason) <= len("evolution 400: ") + 120


# --- callbacks: what the tenant reads of an attempt ------------------------------------------------------

def _delivery(tenant: Tenant, url: str) -> str:
    return callbacks.emit(tenant_id=tenant.id, campaign_id=None, url=url, event="contact.sent", data={"contact_id": 1})


def test_callback_attempts_without_an_http_answer_look_alike(db, service, monkeypatch):
    setup = make_tenant()
    Tenant.update(allow_private_callbacks=True).where(Tenant.id == setup.tenant.id).execute()
    answering = service(status=500)
    ids = {
        "refused": _delivery(setup.tenant, f"{closed_port_url()}/hook"),
        "unresolved": _delivery(setup.tenant, "http://no-such-host.invalid/hook"),
        "answered": _delivery(setup.tenant, f"{answering.url}/hook"),
    }
    with structlog.testing.capture_logs() as logs:
        for delivery_id in ids.values():
            callbacks.deliver(delivery_id)
    shown = {name: callback_log.delivery(delivery_id) for name, delivery_id in ids.items()}
    for name in ("refused", "unresolved"):
        (attempt,) = shown[name]["attempts_log"]
        assert (attempt["status_code"], attempt["error"], attempt["duration_ms"]) == (None, callbacks.NO_HTTP_ANSWER, None)
        assert shown[name]["last_error"] == callbacks.NO_HTTP_ANSWER
    (answered,) = shown["answered"]["attempts_log"]
    assert answered["status_code"] == 500 and answered["error"] == "" and isinstance(answered["duration_ms"], int)
    # The detail is ours: the log says how each connection failed.
    failures = [entry["error"] for entry in logs if entry.get("event") == "callback got no HTTP answer"]
    assert len(failures) == 2 and all(failures)

    client, operator = _operator(db, setup.tenant)
    listed = client.get(f"{ADMIN}/callbacks", headers=operator).json["results"]
    assert {item["id"]: item["last_error"] for item in listed} == {
        ids["refused"]: callbacks.NO_HTTP_ANSWER, ids["unresolved"]: callbacks.NO_HTTP_ANSWER, ids["answered"]: "HTTP 500"}

    cli = Cli(database_url=db, monkeypatch=monkeypatch)
    lines = cli("callbacks", "show", ids["refused"]).stdout.splitlines()
    assert lines[-1].endswith(f"  -  -  {callbacks.NO_HTTP_ANSWER}") and " ms" not in lines[-1]


def test_a_guard_refusal_says_so_without_the_address(db, service, monkeypatch):
    setup = make_tenant()
    monkeypatch.setattr(outbound, "resolve", lambda host, port: ["192.168.77.5"])
    delivery_id = _delivery(setup.tenant, "http://erp.example/hook")
    assert callbacks.deliver(delivery_id).status == callbacks.FAILED
    shown = callback_log.delivery(delivery_id)
    assert shown["last_error"] == f"callback_url {outbound.NOT_ALLOWED}{callbacks.PRIVATE_CALLBACK_HINT}"
    assert "192.168.77.5" not in json.dumps(shown)
    assert shown["attempts_log"][0]["duration_ms"] is None


def test_attempts_recorded_before_the_guard_show_no_connection_detail(db):
    setup = make_tenant()
    delivery_id = _delivery(setup.tenant, "https://erp.example.com/hook")
    old = "ConnectionError: HTTPConnectionPool(host='10.0.0.5', port=22): Connection refused"
    CallbackAttempt.create(delivery=delivery_id, status_code=None, error=old, duration_ms=3)
    CallbackDelivery.update(last_error=old).where(CallbackDelivery.id == delivery_id).execute()
    shown = callback_log.delivery(delivery_id)
    assert shown["last_error"] == callbacks.NO_HTTP_ANSWER
    assert shown["attempts_log"] == [{**shown["attempts_log"][0], "error": callbacks.NO_HTTP_ANSWER, "duration_ms": None}]
    assert "10.0.0.5" not in json.dumps(shown)
