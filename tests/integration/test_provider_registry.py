"""A gateway provider is one declaration.

A throwaway ``echo`` provider is declared below in one module-level
``PROVIDER`` (with the adapter, option schema and webhook body it names) and
registered the way the package registers each provider module's declaration
(``billing.adapters.providers.register``). With no other file touched, the
admin API creates instances of it (its options validated against its schema,
its name in the OpenAPI enum), the CLI offers it, its webhook URL
authenticates and applies an event, its secret is masked in the access log,
and ``billing instance show`` prints its URL. On real SQLite and PostgreSQL.
"""
from __future__ import annotations

import io
import uuid
from collections.abc import Mapping
from contextlib import redirect_stderr
from datetime import datetime

import pytest
import structlog
from pydantic import Field

from billing.adapters.models import Instance
from billing.adapters.providers import PROVIDERS, register, unregister, webhook_url
from billing.adapters.providers.base import CONNECTED, DOWN, ConnectionEvent, ConnectionStatus, NumberCheck, SendResult
from billing.adapters.providers.registry import GatewayOptions, Provider, Webhook, WebhookBody, WebhookDoc
from billing.logconfig import configure_logging
from tests.factories import admin_client
from tests.inprocess_support import Cli
from web import openapi

ADMIN = "/api/v1/admin"
OPERATOR = "op-" + "e" * 40
#: What ``instance show`` prints for an echo instance (``{url}`` is its webhook URL).
SHOW_LINE = "webhook URL (Echo test gateway): {url}"


class EchoOptions(GatewayOptions):
    """The echo gateway's options."""

    latency_ms: int = Field(None, ge=0, le=1_000, description="Pretended latency of each call (ms).")


class EchoWebhook(WebhookBody):
    """The envelope the echo gateway posts: its instance and its state."""

    instance: str = Field(None, description="The gateway's instance name.")
    state: str = Field(None, description="connected or down.")


class EchoGateway:
    """A gateway that is always there; its webhooks report the instance's state."""

    def __init__(self, instance) -> None:
        self.instance = instance
        self.remote_name = instance.name

    def send_text(self, *, phone: str, chat_id: str, text: str, contact_id: int | None) -> SendResult:
        return SendResult(provider_message_id=f"ECHO{uuid.uuid4().hex[:12]}", chat_id=chat_id or phone)

    def connection_state(self) -> str:
        return CONNECTED

    def connection_status(self) -> ConnectionStatus:
        return ConnectionStatus(CONNECTED)

    def find_sent(self, *, chat_id: str, text: str, since: datetime) -> SendResult | None:
        return None

    def check_number(self, phone: str) -> NumberCheck:
        return NumberCheck(exists=True, chat_id=phone)

    def parse_webhook(self, body: Mapping) -> list:
        state = body.get("state")
        return [ConnectionEvent(state=state, reason="echo says so" if state == DOWN else "")] if state in (
            CONNECTED, DOWN) else []

    def foreign_source(self, body: Mapping) -> str:
        named = str(body.get("instance") or "")
        return named if named and named != self.remote_name else ""


PROVIDER = Provider(
    name="echo",
    label="Echo (test gateway)",
    adapter=EchoGateway,
    options=EchoOptions,
    needs_url=False,
    webhook=Webhook(
        doc=WebhookDoc(summary="Echo events", description="The instance's secret is the URL's last segment."),
        body=EchoWebhook,
        show=(SHOW_LINE,),
    ),
)


@pytest.fixture
def echo():
    """The echo provider, registered for one test."""
    register(PROVIDER)
    yield PROVIDER
    unregister(PROVIDER.name)


@pytest.fixture
def admin(db, echo):
    return admin_client(db, operator_token=OPERATOR)


def _create(admin, **fields):
    return admin.post(f"{ADMIN}/instances", headers=admin.auth, json={"name": "eco", "provider": "echo", **fields})


def test_the_admin_api_creates_an_instance_of_a_registered_provider(admin):
    made = _create(admin, options={"latency_ms": 5})
    assert made.status_code == 201 and made.json["provider"] == "echo"
    instance = Instance.get_by_id(made.json["id"])
    assert instance.options == {"latency_ms": 5}
    assert made.json["webhook_url"] == f"/webhooks/echo/{instance.id}/{instance.webhook_secret}"

    unknown = _create(admin, name="eco2", options={"latency": 5})
    assert unknown.status_code == 422
    assert unknown.json["errors"] == [
        {"field": "options", "message": "unknown option 'latency': this provider takes latency_ms"}]
    too_slow = _create(admin, name="eco3", options={"latency_ms": 5_000})
    assert too_slow.status_code == 422 and too_slow.json["errors"][0]["field"] == "options.latency_ms"
    patched = admin.patch(f"{ADMIN}/instances/{instance.id}", headers=admin.auth, json={"options": {"latency_ms": 9}})
    assert patched.status_code == 200 and Instance.get_by_id(instance.id).options == {"latency_ms": 9}
    bad_patch = admin.patch(f"{ADMIN}/instances/{instance.id}", headers=admin.auth, json={"options": {"typing": True}})
    assert bad_patch.status_code == 422 and "unknown option 'typing'" in bad_patch.json["message"]

    unregister("echo")  # once gone, the name is refused like any unknown one
    gone = _create(admin, name="eco4")
    assert gone.status_code == 422 and gone.json["errors"][0]["field"] == "provider"


def test_the_openapi_document_lists_the_provider_its_options_and_its_webhook(admin):
    document = openapi.build(admin.application)
    schemas = document["components"]["schemas"]
    assert "echo" in schemas["InstanceCreate"]["properties"]["provider"]["enum"]
    assert {"$ref": "#/components/schemas/EchoOptions"} in schemas["InstanceCreate"]["properties"]["options"]["anyOf"]
    assert schemas["EchoOptions"]["properties"]["latency_ms"]["maximum"] == 1_000
    hook = document["paths"]["/webhooks/echo/{instance_id}/{secret}"]["post"]
    assert hook["summary"] == "Echo events" and hook["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EchoWebhook"}
    assert "Echo (test gateway)" in next(t["description"] for t in document["tags"] if t["name"] == "webhooks")


def test_its_webhook_authenticates_applies_events_and_its_secret_is_masked_in_the_log(admin):
    made = _create(admin)
    instance = Instance.get_by_id(made.json["id"])
    url = webhook_url(instance)
    configure_logging(log_format="json", level="INFO")
    buffer = io.StringIO()
    with redirect_stderr(buffer):
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer))
        answer = admin.post(url, json={"instance": "eco", "state": "down"})
        structlog.get_logger("test").info("configured", note=f"gateway posts to https://billing.example{url}")
    configure_logging(log_format="console", level="INFO")

    assert answer.status_code == 200 and answer.json == {"success": True, "events": 1}
    assert (Instance.get_by_id(instance.id).health, Instance.get_by_id(instance.id).health_reason) == (
        DOWN, "echo says so")
    log = buffer.getvalue()
    assert instance.webhook_secret not in log
    assert f'"path": "/webhooks/echo/{instance.id}/***"' in log and f"billing.example/webhooks/echo/{instance.id}/***" in log

    assert admin.post(f"/webhooks/echo/{instance.id}/wrong", json={}).json == {
        "success": False, "message": "webhook not authenticated: unknown instance, or wrong secret or signature"}
    assert admin.post(url, json={"instance": "other", "state": "connected"}).status_code == 403
    assert admin.post(f"/webhooks/echo/{instance.id + 1000}/x", json={}).status_code == 401
    # Only the URLs the provider declares exist: no event suffix, no signed URL.
    assert admin.post(f"{url}/state-update", json={}).status_code == 404
    assert admin.post(f"/webhooks/echo/{instance.id}", json={}).status_code == 404
    assert admin.post(url, data="[]", content_type="application/json").json == {"success": True, "events": 0}
    not_json = admin.post(url, data="not json", content_type="application/json")
    assert not_json.status_code == 400 and not_json.json["success"] is False


def test_the_cli_offers_the_provider_and_shows_its_webhook_url(db, echo, monkeypatch):
    monkeypatch.delenv("BROKER_URL", raising=False)
    cli = Cli(database_url=db, monkeypatch=monkeypatch)
    cli("tenant", "create", "acme")
    created = cli("instance", "create", "--tenant", "acme", "--provider", "echo", "--name", "eco").stdout
    assert created.startswith("instance eco created (echo, ")
    assert "echo" in cli("instance", "create", "--help").stdout

    instance = Instance.get(Instance.name == "eco")
    shown = cli("instance", "show", "--tenant", "acme", "--name", "eco",
                env={"PUBLIC_URL": "https://billing.example"}).stdout.splitlines()
    assert shown[-1] == SHOW_LINE.format(url=f"https://billing.example/webhooks/echo/{instance.id}/{instance.webhook_secret}")

    unregister("echo")
    refused = cli("instance", "create", "--tenant", "acme", "--provider", "echo", "--name", "eco2", ok=False)
    assert refused.exit_code == 2 and "'echo' is not one of" in refused.stderr


def test_a_name_is_declared_once_and_must_fit_a_url_segment(echo):
    assert PROVIDERS["echo"] is register(PROVIDER)  # the same declaration again: harmless
    with pytest.raises(ValueError, match="declared twice"):
        register(Provider(name="echo", label="another", adapter=EchoGateway, options=EchoOptions))
    with pytest.raises(ValueError, match="must be lowercase"):
        register(Provider(name="Echo/2", label="bad", adapter=EchoGateway, options=EchoOptions))
