"""Gateways as they really are, end to end on real SQLite and PostgreSQL:
WAHA Core's unsigned webhooks posted to the URL `billing instance show`
prints, Evolution's "Webhook by Events" URLs and instance removal, webhooks
for another instance refused, bursts absorbed without writes, instance-wide
failures recorded on the instance with their reason, and auto-replies that a
gateway failure cannot lose or send twice."""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import requests
import structlog

from billing import campaigns, dispatch, health, inbound, sending, tenants
from billing.adapters.models import Contact, Event, InboundMessage, Instance, OptOut, Queue, SandboxMessage
from billing.adapters.providers import PROVIDERS, gateway_for, webhook_url
from billing.adapters.providers.base import CONNECTED, DOWN, SendResult
from billing.apikeys import issue_admin_token
from billing.clock import utcnow
from billing.domain.states import ContactStatus, QueueStatus
from tests.factories import LiveApp, contact, make_tenant, phones
from tests.fakes import post_json
from tests.fakes import waha as wa
from tests.fakes.evolution import FakeEvolution
from tests.fakes.waha import FakeWaha

#: The headers a real WAHA Core 2024.10.8 sends (webhooks-observed.txt): no signature, no id.
CORE_HEADERS = {"Content-Type": "application/json", "User-Agent": "WAHA/2024.10.8"}
EVOLUTION_HEADERS = {"Content-Type": "application/json", "User-Agent": "axios/1.12.2"}
#: The Evolution instance name of the observed webhooks.
OBSERVED_EVOLUTION_NAME = "gwevo"
#: What a never-paired Evolution instance sent in about a second.
BURST_SIZE = 35
#: Seconds beyond health's unchanged-write interval.
LATER_SECONDS = 6
#: A read timeout far below the fakes' hang.
SHORT_TIMEOUT_SECONDS = 0.5
HANG_SECONDS = 10.0
BILLING_CLI = Path(sys.executable).with_name("billing")

#: WAHA Core 2024.10.8's envelope, verbatim from webhooks-observed.txt; the
#: message / message.ack payloads are WAHA's (NOWEB) for those events.
CORE_ENVELOPE = {"me": None, "engine": "NOWEB",
                 "environment": {"version": "2024.10.8", "engine": "NOWEB", "tier": "CORE",
                                 "browser": "/usr/bin/chromium"}}


def core_body(event: str, payload: dict, *, session: str = "default") -> dict:
    return {"event": event, "session": session, **CORE_ENVELOPE, "payload": payload}


def observed_evolution(event: str) -> dict:
    """The Evolution bodies of webhooks-observed.txt."""
    envelope = {"destination": "http://<our host>/webhooks/evolution/2/<secret>",
                "date_time": "2026-11-29T10:33:12.492Z", "server_url": "http://<gateway host>",
                "apikey": "<instance token>"}
    data = {
        "connection.update": {"instance": OBSERVED_EVOLUTION_NAME, "state": "connecting", "statusReason": 200},
        "remove.instance": None,
        "instance.delete": {"instanceName": OBSERVED_EVOLUTION_NAME,
                            "instanceId": "2391bf5f-1377-48b6-b8ba-f02e1c040128"},
    }[event]
    return {"event": event, "instance": OBSERVED_EVOLUTION_NAME, "data": data, **envelope}


@pytest.fixture
def app(db):
    live = LiveApp(db)
    yield live
    live.close()


def _gateway_instance(setup, fake, *, provider: str, name: str, **options):
    Instance.update(is_active=False).execute()  # only the gateway instance sends
    return tenants.create_instance(
        setup.tenant, name=name, provider=provider, url=fake.url, token="k",
        options={"typing_ms": 0, "typing": False, **options}, min_interval=0.01, max_interval=0.01,
    )


def _campaign(setup, numbers: list[str], *, external_id: str, **extra) -> str:
    created = campaigns.create_campaign(
        setup.tenant, template_type="overdue",
        request={"external_id": external_id, "contacts": [contact(p, **extra) for p in numbers]},
    )
    return created.queue_id


def _send_all(queue_id: str) -> list[Contact]:
    plan = dispatch.plan_dispatch(queue_id, horizon=timedelta(seconds=60), batch_size=100)
    for contact_id, _ in plan.sends:
        sending.send_one(contact_id)
    return list(Contact.select().where(Contact.queue == queue_id).order_by(Contact.position))


def _printed(db: str, app: LiveApp, *, tenant: str, name: str) -> str:
    """What `billing instance show` prints, run as an operator would."""
    env = {**os.environ, "DATABASE_URL": db, "PUBLIC_URL": app.base, "LOG_FORMAT": "console"}
    shown = subprocess.run([str(BILLING_CLI), "instance", "show", "--tenant", tenant, "--name", name],
                           env=env, capture_output=True, text=True, timeout=60, check=True)
    return shown.stdout


def _printed_url(output: str) -> str:
    return re.search(r"^webhook URL \([^)]*\): (\S+)$", output, re.M).group(1)


# ------------------------------------------------------------ 1. WAHA Core: unsigned webhooks to the printed URL


def test_waha_core_webhooks_posted_unsigned_to_the_printed_url_are_applied(app, db):
    with FakeWaha(api_key=None) as fake:
        setup = make_tenant(allow_private_callbacks=True)
        instance = _gateway_instance(setup, fake, provider="waha", name="default")
        read_one, delivered_one = _send_all(_campaign(setup, phones(2), external_id="first"))
        later = _campaign(setup, phones(1), external_id="later")  # not sent yet: pending
        url = _printed_url(_printed(db, app, tenant="acme", name="default"))
        assert url == f"{app.base}/webhooks/waha/{instance.id}/{instance.webhook_secret}"

        answers = [
            post_json(url, core_body("message.ack", {"id": read_one.provider_message_id, "from": read_one.chat_id,
                                                     "fromMe": True, "to": read_one.chat_id, "ack": 3,
                                                     "ackName": "READ"}), headers=CORE_HEADERS),
            post_json(url, core_body("message.ack", {"id": delivered_one.provider_message_id, "fromMe": True,
                                                     "to": delivered_one.chat_id, "ack": 2, "ackName": "DEVICE"}),
                      headers=CORE_HEADERS),
            post_json(url, core_body("message", {
                "id": f"false_{read_one.chat_id}_3A0F9D2C41B7E5", "timestamp": 1795400000, "from": read_one.chat_id,
                "fromMe": False, "to": "5511900000000@c.us", "body": "SAIR", "hasMedia": False, "ack": 1,
                "ackName": "SERVER", "_data": {"key": {"remoteJid": f"{read_one.phone[1:]}@s.whatsapp.net",
                                                       "fromMe": False, "id": "3A0F9D2C41B7E5"}}}),
                      headers=CORE_HEADERS),
        ]

    assert [(a.status_code, a.json()) for a in answers] == [(200, {"success": True, "events": 1})] * 3
    assert Contact.get_by_id(read_one.id).status == ContactStatus.READ
    assert Contact.get_by_id(delivered_one.id).status == ContactStatus.DELIVERED
    assert OptOut.select().where(OptOut.phone == read_one.phone).count() == 1
    assert Contact.get(Contact.queue == later).status == ContactStatus.OPTED_OUT


def test_waha_session_status_from_core_records_why_the_instance_is_down(app, db):
    with FakeWaha(api_key=None) as fake:
        setup = make_tenant()
        instance = _gateway_instance(setup, fake, provider="waha", name="default")
        url = webhook_url(instance, base_url=app.base)
        # The two session.status bodies of webhooks-observed.txt, verbatim.
        starting = post_json(url, core_body("session.status", {"name": "default", "status": "STARTING"}),
                             headers=CORE_HEADERS)
        stopped = post_json(url, core_body("session.status", {"name": "default", "status": "STOPPED"}),
                            headers=CORE_HEADERS)
        shown = _printed(db, app, tenant="acme", name="default")

    assert (starting.status_code, stopped.status_code) == (200, 200)
    row = Instance.get_by_id(instance.id)
    assert (row.health, row.health_reason) == (
        DOWN, "waha: session 'default' is stopped (start it: POST /api/sessions/default/start)")
    assert "down because: waha: session 'default' is stopped" in shown
    assert f"webhook HMAC key (sha512, optional: WAHA Plus signs, Core does not): {instance.webhook_secret}" in shown


def test_waha_webhook_hmac_is_checked_when_it_comes_or_is_required(app):
    with FakeWaha(api_key=None) as fake:
        setup = make_tenant()
        instance = _gateway_instance(setup, fake, provider="waha", name="default")
        (sent,) = _send_all(_campaign(setup, phones(1), external_id="h"))
        url = webhook_url(instance, base_url=app.base)
        secret = instance.webhook_secret

        def ack(to: str, ack_code: int, **signing) -> requests.Response:
            return wa.post_webhook(to, wa.ack_body(session="default", message_id=sent.provider_message_id,
                                                   ack=ack_code, core=not signing), **signing)

        wrong_secret_in_url = ack(url.replace(secret, "nope"), 2)
        bad_hmac = ack(url, 2, secret="not-the-secret")
        assert Contact.get_by_id(sent.id).status == ContactStatus.SENT
        good_hmac = ack(url, 2, secret=secret)
        Instance.update(options={**instance.options, "require_hmac": True}).where(Instance.id == instance.id).execute()
        unsigned_when_required = ack(url, 3)
        old_route_unsigned = ack(f"{app.base}/webhooks/waha/{instance.id}", 3)
        assert Contact.get_by_id(sent.id).status == ContactStatus.DELIVERED
        old_route_signed = ack(f"{app.base}/webhooks/waha/{instance.id}", 3, secret=secret)

    assert [r.status_code for r in (wrong_secret_in_url, bad_hmac, good_hmac, unsigned_when_required,
                                    old_route_unsigned, old_route_signed)] == [401, 401, 200, 401, 401, 200]
    assert bad_hmac.json() == {"success": False,
                               "message": "webhook not authenticated: unknown instance, or wrong secret or signature"}
    assert Contact.get_by_id(sent.id).status == ContactStatus.READ


# ------------------------------------------------------------ 3. Evolution: by-events URLs, removal, bursts


def test_evolution_webhook_by_events_urls_are_accepted(app):
    with FakeEvolution(api_key="k", instance=OBSERVED_EVOLUTION_NAME) as fake:
        setup = make_tenant()
        instance = _gateway_instance(setup, fake, provider="evolution", name=OBSERVED_EVOLUTION_NAME)
        (sent,) = _send_all(_campaign(setup, phones(1), external_id="e"))
        base = webhook_url(instance, base_url=app.base)
        connection = post_json(f"{base}/connection-update", observed_evolution("connection.update"),
                               headers=EVOLUTION_HEADERS)
        ack = fake.post_ack(f"{base}/messages-update", message_id=sent.provider_message_id, status="READ")
        wrong_secret = fake.post_ack(f"{base.rsplit('/', 1)[0]}/nope/messages-update",
                                     message_id=sent.provider_message_id, status="READ")

    assert (connection.status_code, connection.json()["events"], ack.status_code) == (200, 1, 200)
    assert wrong_secret.status_code == 401
    row = Instance.get_by_id(instance.id)
    assert (row.health, row.health_reason) == (
        DOWN, "evolution: instance 'gwevo' is not connected to WhatsApp (connect it and scan its QR code)")
    assert Contact.get_by_id(sent.id).status == ContactStatus.READ


@pytest.mark.parametrize("event", ["remove.instance", "instance.delete"])
def test_a_removed_evolution_instance_goes_down_at_once(app, event):
    with FakeEvolution(api_key="k", instance=OBSERVED_EVOLUTION_NAME) as fake:
        setup = make_tenant()
        instance = _gateway_instance(setup, fake, provider="evolution", name=OBSERVED_EVOLUTION_NAME)
        queue_id = _campaign(setup, phones(3), external_id="r")
        Queue.update(status=QueueStatus.PROCESSING).execute()
        health.record_state(instance.id, CONNECTED)
        answer = post_json(webhook_url(instance, base_url=app.base), observed_evolution(event),
                           headers=EVOLUTION_HEADERS)

    assert answer.status_code == 200 and answer.json()["events"] == 1
    row = Instance.get_by_id(instance.id)
    gone = "was removed from the gateway" if event == "remove.instance" else "was deleted on the gateway"
    assert (row.health, row.health_reason) == (DOWN, f"evolution: instance 'gwevo' {gone} ({event})")
    assert Queue.get_by_id(queue_id).status == QueueStatus.INSTANCE_DOWN
    assert Contact.select().where(Contact.status == ContactStatus.FAILED).count() == 0


def test_a_webhook_naming_another_instance_or_session_is_refused(app):
    with FakeEvolution(api_key="k", instance="loja1") as evolution, FakeWaha(api_key=None) as waha:
        setup = make_tenant()
        evo = _gateway_instance(setup, evolution, provider="evolution", name="loja1")
        waha_row = _gateway_instance(setup, waha, provider="waha", name="default")
        (sent,) = _send_all(_campaign(setup, phones(1), external_id="f"))
        Instance.update(is_active=True).where(Instance.id == evo.id).execute()
        # A secret leaked with loja1's URL must not speak for gwevo, nor a WAHA URL for another session.
        evolution_answer = post_json(webhook_url(evo, base_url=app.base), observed_evolution("remove.instance"))
        waha_answer = post_json(webhook_url(waha_row, base_url=app.base), core_body(
            "message.ack", {"id": sent.provider_message_id, "fromMe": True, "ack": 3}, session="other"))

    for answer in (evolution_answer, waha_answer):
        assert answer.status_code == 403 and answer.headers["Content-Type"].startswith("application/json")
        assert answer.json() == {"success": False,
                                 "message": "the webhook names another instance or session than this URL's"}
    assert Instance.get_by_id(evo.id).health == "unknown"
    assert Contact.get_by_id(sent.id).status == ContactStatus.SENT


class _InstanceWrites(logging.Handler):
    """Counts the UPDATE statements on the instance table peewee runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        sql = record.msg[0] if isinstance(record.msg, tuple) else str(record.msg)
        self.count += sql.startswith('UPDATE "instance"')


def test_a_burst_of_identical_connection_events_writes_once(app):
    with FakeEvolution(api_key="k", instance=OBSERVED_EVOLUTION_NAME) as fake:
        setup = make_tenant()
        instance = _gateway_instance(setup, fake, provider="evolution", name=OBSERVED_EVOLUTION_NAME)
        url = f"{webhook_url(instance, base_url=app.base)}/connection-update"
        writes, peewee_log = _InstanceWrites(), logging.getLogger("peewee")
        previous_level = peewee_log.level
        peewee_log.addHandler(writes)
        peewee_log.setLevel(logging.DEBUG)
        try:
            with structlog.testing.capture_logs() as logged:
                first = post_json(url, observed_evolution("connection.update"), headers=EVOLUTION_HEADERS)
                checked_at = Instance.get_by_id(instance.id).health_checked_at
                burst = [post_json(url, observed_evolution("connection.update"), headers=EVOLUTION_HEADERS)
                         for _ in range(BURST_SIZE - 1)]
        finally:
            peewee_log.removeHandler(writes)
            peewee_log.setLevel(previous_level)

    assert {a.status_code for a in [first, *burst]} == {200}
    assert writes.count == 1
    assert Instance.get_by_id(instance.id).health_checked_at == checked_at
    changes = [e for e in logged if e["event"] == "instance health changed"]
    assert [(e["instance"], e["health"]) for e in changes] == [(OBSERVED_EVOLUTION_NAME, DOWN)]


# ------------------------------------------------------------ 2. health: the instance's state and reason


def test_record_state_writes_and_logs_only_changes(db):
    setup = make_tenant()
    instance_id = setup.instance.id
    start = utcnow()
    with structlog.testing.capture_logs() as logged:
        health.record_state(instance_id, DOWN, reason="evolution 401: wrong key", now=start)
        health.record_state(instance_id, DOWN, reason="evolution 401: wrong key", now=start + timedelta(seconds=1))
        unchanged = Instance.get_by_id(instance_id).health_checked_at
        health.record_state(instance_id, DOWN, reason="evolution 401: wrong key",
                            now=start + timedelta(seconds=LATER_SECONDS))
        refreshed = Instance.get_by_id(instance_id).health_checked_at
        health.record_state(instance_id, DOWN, reason="evolution 404: unknown instance",
                            now=start + timedelta(seconds=LATER_SECONDS + 1))
        health.record_state(instance_id, CONNECTED, reason="ignored when connected",
                            now=start + timedelta(seconds=LATER_SECONDS + 2))

    assert unchanged == start and refreshed == start + timedelta(seconds=LATER_SECONDS)
    changes = [(e["health"], e["reason"]) for e in logged if e["event"] == "instance health changed"]
    assert changes == [(DOWN, "evolution 401: wrong key"), (DOWN, "evolution 404: unknown instance"), (CONNECTED, "")]
    assert (Instance.get_by_id(instance_id).health, Instance.get_by_id(instance_id).health_reason) == (CONNECTED, "")


@pytest.mark.parametrize(
    ("provider", "fake_class", "name", "token", "reason"),
    [
        pytest.param("evolution", FakeEvolution, "billing", "rotated",
                     "evolution 401: gateway rejected the API key (wrong or rotated token: update the instance's "
                     "token)", id="evolution-wrong-token"),
        pytest.param("evolution", FakeEvolution, "gone", "k", 'evolution 404: The "gone" instance does not exist',
                     id="evolution-unknown-instance"),
        pytest.param("waha", FakeWaha, "loja1", "k",
                     "waha 404: no session 'loja1' on the gateway (WAHA Core has only the 'default' session)",
                     id="waha-non-default-session"),
        pytest.param("waha", FakeWaha, "default", "rotated",
                     "waha 401: gateway rejected the API key (wrong or rotated token: update the instance's token)",
                     id="waha-wrong-token"),
    ],
)
def test_health_check_records_why_an_instance_is_down(app, provider, fake_class, name, token, reason):
    with fake_class(api_key="k") as fake:
        setup = make_tenant()
        instance = _gateway_instance(setup, fake, provider=provider, name=name)
        tenants.update_instance(instance, token=token)
        queue_id = _campaign(setup, phones(2), external_id="hc")
        Queue.update(status=QueueStatus.PROCESSING).execute()

        assert health.check(Instance.get_by_id(instance.id)) == []
        row = Instance.get_by_id(instance.id)
        assert (row.health, row.health_reason) == (DOWN, reason)
        assert Queue.get_by_id(queue_id).status == QueueStatus.INSTANCE_DOWN
        admin_view = _admin_instances(app, setup)[str(instance.id)]
        assert admin_view["health_reason"] == reason
        assert admin_view["webhook_url"].endswith(f"/webhooks/{provider}/{instance.id}/{instance.webhook_secret}")

        # Fixed on the gateway side: the next check brings it back and resumes the queues.
        fake.require_api_key(token)
        if provider == "evolution":
            fake.instance = name
        else:
            fake.session = name
        assert health.check(Instance.get_by_id(instance.id)) == [queue_id]
    assert (Instance.get_by_id(instance.id).health, Instance.get_by_id(instance.id).health_reason) == (CONNECTED, "")


def _admin_instances(app: LiveApp, setup) -> dict:
    _, token = issue_admin_token(setup.tenant)
    listed = app.client.get("/api/v1/admin/instances", headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 200
    return {str(item["id"]): item for item in listed.json["results"]}


class _BrokenAdapter:
    def __init__(self, instance) -> None:
        self.instance = instance

    def connection_status(self):
        raise RuntimeError("adapter bug")


def test_health_check_counts_an_adapter_failure_as_down(db, monkeypatch):
    setup = make_tenant()
    instance = Instance.get(Instance.tenant == setup.tenant.id)
    monkeypatch.setitem(PROVIDERS, "sandbox", dataclasses.replace(PROVIDERS["sandbox"], adapter=_BrokenAdapter))

    assert health.check(instance) == []
    assert (Instance.get_by_id(instance.id).health, Instance.get_by_id(instance.id).health_reason) == (
        DOWN, "health check failed: RuntimeError")


def test_a_wrong_token_fails_no_contact_and_spends_no_attempt(db):
    with FakeEvolution(api_key="k") as fake:
        setup = make_tenant()
        instance = _gateway_instance(setup, fake, provider="evolution", name="billing")
        tenants.update_instance(instance, token="rotated")
        queue_id = _campaign(setup, phones(3), external_id="wt")
        rows = _send_all(queue_id)

    assert fake.messages == []
    assert [r.status for r in rows if r.status in (ContactStatus.FAILED, ContactStatus.SENT)] == []
    assert all(r.attempts == 0 for r in rows)
    assert Instance.get_by_id(instance.id).health == DOWN
    assert Queue.get_by_id(queue_id).status != QueueStatus.COMPLETED


# ------------------------------------------------------------ 8. auto-replies survive gateway failures


def _question(app: LiveApp, setup, fake, instance) -> int:
    tenants.update_tenant(setup.tenant, auto_reply=True)
    (sent,) = _send_all(_campaign(setup, phones(1), external_id="pix", codigo_pix="00020126***6304ABCD"))
    fake.post_inbound(webhook_url(instance, base_url=app.base), phone=sent.phone, text="qual a chave pix?")
    (inbound_id,) = app.jobs.answered
    return inbound_id


def _auto_replies(fake) -> list[str]:
    return [m.text for m in fake.messages if m.text.startswith("Segue o PIX")]


def test_a_failed_auto_reply_is_sent_by_the_retry_exactly_once(app):
    with FakeEvolution(api_key="k") as fake:
        setup = make_tenant()
        instance = _gateway_instance(setup, fake, provider="evolution", name="billing")
        inbound_id = _question(app, setup, fake, instance)
        fake.fail_next(1, status=500)

        with pytest.raises(Exception) as failed:
            inbound.send_auto_reply(inbound_id)
        assert failed.value.transient and InboundMessage.get_by_id(inbound_id).answered_at is None
        assert InboundMessage.get_by_id(inbound_id).answer_claimed_at is None  # released for the retry
        assert inbound.send_auto_reply(inbound_id) is True   # the actor's retry
        assert inbound.send_auto_reply(inbound_id) is False  # a redelivery sends nothing more
        replies = _auto_replies(fake)

    assert replies == ["Segue o PIX copia e cola:\n00020126***6304ABCD"]
    assert InboundMessage.get_by_id(inbound_id).answered_at is not None


def test_an_auto_reply_whose_answer_never_came_is_not_sent_twice(app):
    with FakeEvolution(api_key="k") as fake:
        setup = make_tenant()
        instance = _gateway_instance(setup, fake, provider="evolution", name="billing",
                                     timeout_seconds=SHORT_TIMEOUT_SECONDS)
        inbound_id = _question(app, setup, fake, instance)
        fake.hang_next(1, seconds=HANG_SECONDS)

        with pytest.raises(Exception) as failed:
            inbound.send_auto_reply(inbound_id)
        assert failed.value.ambiguous
        assert inbound.send_auto_reply(inbound_id) is True  # found on the gateway, not sent again
        replies = _auto_replies(fake)

    assert len(replies) == 1
    found = Event.select().where(Event.kind == inbound.AUTO_REPLY_EVENT).get()
    assert found.detail["provider_message_id"] == fake.messages[-1].id


def test_a_claimed_auto_reply_is_taken_again_only_after_the_claim_timeout(app):
    with FakeEvolution(api_key="k") as fake:
        setup = make_tenant()
        instance = _gateway_instance(setup, fake, provider="evolution", name="billing")
        inbound_id = _question(app, setup, fake, instance)
        now = utcnow()
        InboundMessage.update(answer_claimed_at=now).execute()  # another worker is sending it

        assert inbound.send_auto_reply(inbound_id, now=now + timedelta(seconds=30)) is False
        assert inbound.send_auto_reply(inbound_id, now=now + inbound.AUTO_REPLY_CLAIM_TIMEOUT
                                       + timedelta(seconds=1)) is True  # that worker died
        replies = _auto_replies(fake)

    assert len(replies) == 1


# ------------------------------------------------------------ 13. the sandbox can tell what it sent


def test_sandbox_find_sent_answers_from_its_outbox(db):
    setup = make_tenant()
    instance = Instance.get(Instance.tenant == setup.tenant.id)
    gateway = gateway_for(instance)
    since = utcnow()
    sent = gateway.send_text(phone="+5511987654321", chat_id="", text="oi", contact_id=None)

    assert gateway.find_sent(chat_id="5511987654321@s.whatsapp.net", text="oi", since=since) == SendResult(
        sent.provider_message_id, "5511987654321@s.whatsapp.net")
    assert gateway.find_sent(chat_id="5511987654321@c.us", text="other", since=since) is None
    assert gateway.find_sent(chat_id="5511987654321@s.whatsapp.net", text="oi",
                             since=since + timedelta(minutes=1)) is None
    assert SandboxMessage.select().count() == 1
