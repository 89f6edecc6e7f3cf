"""Contract tests of the Evolution and WAHA adapters, over real HTTP against
the local fakes in :mod:`tests.fakes` (which copy the real servers' answers).

Instances are plain namespaces (name, url, token, options), so no database is
needed. Timing-sensitive cases use short typing delays and timeouts through
the instance options the adapters read.
"""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from billing.adapters.providers import PROVIDERS, gateway_for
from billing.adapters.providers.base import (
    ACK_DELIVERED,
    ACK_FAILED,
    ACK_READ,
    ACK_SENT,
    CONNECTED,
    CONNECTING,
    DOWN,
    AckEvent,
    GatewayError,
    InboundMessage,
    NumberCheck,
)
from billing.adapters.providers.evolution import EvolutionGateway
from billing.adapters.providers.http import flatten_message
from billing.adapters.providers.waha import WahaGateway, verify_waha_signature
from tests.fakes import WebhookReceiver, closed_port_url
from tests.fakes import evolution as evo
from tests.fakes import waha as wa
from tests.fakes.evolution import FakeEvolution
from tests.fakes.waha import FakeWaha

#: A São Paulo mobile, its digits, and the same account keyed without the 9.
PHONE = "+5511987654321"
DIGITS = "5511987654321"
SHORT_DIGITS = "551187654321"
EVOLUTION_JID = f"{DIGITS}@s.whatsapp.net"
EVOLUTION_SHORT_JID = f"{SHORT_DIGITS}@s.whatsapp.net"
WAHA_CHAT = f"{DIGITS}@c.us"
WAHA_SHORT_CHAT = f"{SHORT_DIGITS}@c.us"
LID = "123456789012345"

API_KEY = "test-key"
EVOLUTION_INSTANCE = "billing"
WAHA_SESSION = "default"
#: Typing delay used in tests (ms): long enough to measure, short enough to be quick.
TYPING_MS = 40
#: A timeout far below the fake's slow answers, so timeouts are certain.
SHORT_TIMEOUT_SECONDS = 0.3
SLOW_ANSWER_SECONDS = 2.0
#: A typing delay longer than SHORT_TIMEOUT_SECONDS (the timeout must cover it).
LONG_TYPING_MS = 500
MS = 1000
#: Lets timing assertions tolerate the clock's granularity.
CLOCK_SLACK_SECONDS = 0.01
WEBHOOK_SECRET = "whsec-test"


def evolution_instance(fake: FakeEvolution | None, *, url: str = "", name: str = EVOLUTION_INSTANCE,
                       token: str = API_KEY, **options: Any) -> SimpleNamespace:
    options.setdefault("typing_ms", TYPING_MS)
    return SimpleNamespace(name=name, url=url or fake.url, token=token, options=options, provider="evolution")


def waha_instance(fake: FakeWaha | None, *, url: str = "", name: str = WAHA_SESSION, token: str = API_KEY,
                  **options: Any) -> SimpleNamespace:
    options.setdefault("typing_ms", TYPING_MS)
    return SimpleNamespace(name=name, url=url or fake.url, token=token, options=options, provider="waha")


def send(gateway: Any, *, chat_id: str = "", text: str = "Olá, sua fatura vence amanhã") -> Any:
    return gateway.send_text(phone=PHONE, chat_id=chat_id, text=text, contact_id=1)


def gateway_error(call: Callable[[], Any]) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        call()
    return info.value


@pytest.fixture
def evolution():
    with FakeEvolution(api_key=API_KEY, instance=EVOLUTION_INSTANCE) as fake:
        yield fake


@pytest.fixture
def waha():
    with FakeWaha(api_key=API_KEY, session=WAHA_SESSION) as fake:
        yield fake


@pytest.fixture
def receiver():
    with WebhookReceiver() as endpoint:
        yield endpoint


# ---------------------------------------------------------------- registry


def test_adapters_are_registered_and_built_from_an_instance(evolution, waha):
    assert PROVIDERS["evolution"].adapter is EvolutionGateway and PROVIDERS["waha"].adapter is WahaGateway
    assert isinstance(gateway_for(evolution_instance(evolution)), EvolutionGateway)
    assert isinstance(gateway_for(waha_instance(waha)), WahaGateway)


def test_adapters_import_without_flask_or_dramatiq():
    code = (
        "import sys, billing.adapters.providers.evolution, billing.adapters.providers.waha\n"
        "loaded = [m for m in ('flask', 'dramatiq') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- Evolution: sending


def test_evolution_sends_the_v2_body_with_the_api_key(evolution):
    result = send(EvolutionGateway(evolution_instance(evolution)), text="oi")

    [request] = evolution.requests
    assert (request.method, request.path) == ("POST", f"/message/sendText/{EVOLUTION_INSTANCE}")
    assert request.headers["apikey"] == API_KEY
    assert request.json == {"number": DIGITS, "text": "oi", "delay": TYPING_MS, "linkPreview": False}
    [message] = evolution.delivered
    assert result.provider_message_id == message.id and message.id.startswith("3EB0")
    assert result.chat_id == EVOLUTION_JID


def test_evolution_sends_the_v1_body_when_configured():
    with FakeEvolution(api_key=API_KEY, body_version=evo.BODY_V1) as fake:
        result = send(EvolutionGateway(evolution_instance(fake, evolution_body="v1")), text="oi")

        assert fake.requests[0].json == {
            "number": DIGITS,
            "options": {"delay": TYPING_MS, "presence": "composing"},
            "textMessage": {"text": "oi"},
        }
        assert result.provider_message_id == fake.delivered[0].id


def test_evolution_v1_body_on_a_v2_server_takes_the_instance_down(evolution):
    # Every message would be rejected alike: the instance's configuration, not the contact.
    error = gateway_error(lambda: send(EvolutionGateway(evolution_instance(evolution, evolution_body="v1"))))

    assert error.reason.startswith('evolution 400: instance requires property "text" (the server rejects this request '
                                   "shape for every message: check the instance's evolution_body option)")
    assert (error.transient, error.instance_down, error.ambiguous) == (True, True, False)


def test_evolution_sends_to_the_digits_of_a_known_jid(evolution):
    result = send(EvolutionGateway(evolution_instance(evolution)), chat_id=EVOLUTION_SHORT_JID)

    assert evolution.requests[0].json["number"] == SHORT_DIGITS
    assert result.chat_id == EVOLUTION_SHORT_JID


def test_evolution_timeout_covers_the_typing_delay(evolution):
    gateway = EvolutionGateway(
        evolution_instance(evolution, typing_ms=LONG_TYPING_MS, timeout_seconds=SHORT_TIMEOUT_SECONDS)
    )
    started = time.monotonic()

    send(gateway)

    assert time.monotonic() - started >= LONG_TYPING_MS / MS - CLOCK_SLACK_SECONDS
    assert evolution.requests[0].json["delay"] == LONG_TYPING_MS


def test_evolution_resolving_gateway_reports_the_jid_whatsapp_resolved():
    with FakeEvolution(api_key=API_KEY, resolve_jids=True) as fake:
        fake.registered_without_nine(PHONE)

        result = send(EvolutionGateway(evolution_instance(fake)))

        assert result.chat_id == EVOLUTION_SHORT_JID
        assert [m.chat_id for m in fake.delivered] == [EVOLUTION_SHORT_JID]


# ---------------------------------------------------------------- Evolution: numbers


def test_evolution_check_number_exists(evolution):
    check = EvolutionGateway(evolution_instance(evolution)).check_number(PHONE)

    assert check == NumberCheck(exists=True, chat_id=EVOLUTION_JID)
    assert evolution.requests[0].path == f"/chat/whatsappNumbers/{EVOLUTION_INSTANCE}"
    assert evolution.requests[0].json == {"numbers": [DIGITS]}


def test_evolution_check_number_not_on_whatsapp(evolution):
    evolution.not_on_whatsapp(PHONE)

    assert EvolutionGateway(evolution_instance(evolution)).check_number(PHONE) == NumberCheck(exists=False)


def test_evolution_number_without_nine_is_sent_to_the_returned_jid(evolution):
    evolution.registered_without_nine(PHONE)
    gateway = EvolutionGateway(evolution_instance(evolution))

    check = gateway.check_number(PHONE)
    result = send(gateway, chat_id=check.chat_id)
    send(gateway)  # the 9-form, as if the check had been skipped

    assert check == NumberCheck(exists=True, chat_id=EVOLUTION_SHORT_JID)
    assert result.chat_id == EVOLUTION_SHORT_JID
    assert [(m.chat_id, m.reached) for m in evolution.messages] == [(EVOLUTION_SHORT_JID, True), (EVOLUTION_JID, False)]


# ---------------------------------------------------------------- Evolution: state


@pytest.mark.parametrize(
    ("state", "expected"),
    [("open", CONNECTED), ("connecting", CONNECTING), ("close", DOWN), ("refused", DOWN), ("unstarted", DOWN)],
)
def test_evolution_connection_state(evolution, state, expected):
    evolution.set_state(state)

    assert EvolutionGateway(evolution_instance(evolution)).connection_state() == expected
    assert evolution.requests[0].path == f"/instance/connectionState/{EVOLUTION_INSTANCE}"


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda fake: evolution_instance(fake, name="nope"), id="unknown-instance"),
        pytest.param(lambda fake: evolution_instance(fake, token="wrong"), id="bad-key"),
        pytest.param(lambda fake: evolution_instance(fake, url=closed_port_url()), id="unreachable"),
        pytest.param(
            lambda fake: fake.slow(SLOW_ANSWER_SECONDS)
            or evolution_instance(fake, timeout_seconds=SHORT_TIMEOUT_SECONDS),
            id="timeout",
        ),
    ],
)
def test_evolution_connection_state_is_down_when_it_cannot_be_asked(evolution, broken):
    assert EvolutionGateway(broken(evolution)).connection_state() == DOWN


# ---------------------------------------------------------------- Evolution: errors

SEND, CHECK = "send", "check"


@pytest.mark.parametrize(
    ("setup", "call", "reason", "transient", "instance_down"),
    [
        pytest.param(lambda f: evolution_instance(f, name="nope"), SEND,
                     'evolution 404: The "nope" instance does not exist', True, True, id="unknown-instance-send"),
        pytest.param(lambda f: evolution_instance(f, name="nope"), CHECK,
                     'evolution 404: The "nope" instance does not exist', True, True, id="unknown-instance-check"),
        pytest.param(lambda f: f.not_on_whatsapp(PHONE) or evolution_instance(f), SEND,
                     "evolution 400: number is not on WhatsApp", False, False, id="not-on-whatsapp"),
        pytest.param(lambda f: f.disconnect() or evolution_instance(f), SEND,
                     "evolution 500: Connection Closed", True, True, id="closed-send-500"),
        pytest.param(lambda f: f.disconnect() or evolution_instance(f), CHECK,
                     "evolution 400: Connection Closed", True, True, id="closed-check-boom-400"),
        pytest.param(lambda f: f.set_state("connecting") or evolution_instance(f), SEND,
                     "evolution 500: Connection Closed", True, True, id="connecting-send"),
        pytest.param(lambda f: f.set_state("unstarted") or evolution_instance(f), SEND,
                     "evolution 500: Cannot read properties of undefined (reading 'onWhatsApp')", True, True,
                     id="never-started-send"),
        pytest.param(lambda f: f.set_state("unstarted") or evolution_instance(f), CHECK,
                     "evolution 400: empty error (instance not started?)", True, True, id="never-started-check"),
        pytest.param(lambda f: evolution_instance(f, token="wrong"), SEND,
                     "evolution 401: gateway rejected the API key (wrong or rotated token", True, True,
                     id="bad-key-send"),
        pytest.param(lambda f: evolution_instance(f, token="wrong"), CHECK,
                     "evolution 401: gateway rejected the API key (wrong or rotated token", True, True,
                     id="bad-key-check"),
        pytest.param(lambda f: f.fail_next(1) or evolution_instance(f), SEND,
                     "evolution 500: Injected failure", True, False, id="server-error"),
        pytest.param(lambda f: f.fail_next(1, status=503) or evolution_instance(f), SEND,
                     "evolution 503: Injected failure", True, False, id="unavailable"),
        pytest.param(lambda f: f.fail_next(1, status=429) or evolution_instance(f), SEND,
                     "evolution 429: Injected failure", True, False, id="rate-limited"),
        pytest.param(lambda f: f.slow(SLOW_ANSWER_SECONDS) or evolution_instance(
            f, typing_ms=0, timeout_seconds=SHORT_TIMEOUT_SECONDS), SEND,
                     "evolution did not answer POST /message/sendText/billing within 0.3 s", True, False, id="timeout"),
        pytest.param(lambda f: evolution_instance(f, url=closed_port_url()), SEND,
                     "evolution unreachable at http://127.0.0.1:", True, True, id="unreachable"),
        pytest.param(lambda f: evolution_instance(f, url="evolution.local:8080"), SEND,
                     "evolution URL 'evolution.local:8080' refused: must be an http:// or https:// URL", True, True, id="invalid-url"),
    ],
)
def test_evolution_errors_are_classified(evolution, setup, call, reason, transient, instance_down):
    gateway = EvolutionGateway(setup(evolution))
    action = (lambda: send(gateway)) if call == SEND else (lambda: gateway.check_number(PHONE))

    error = gateway_error(action)

    assert error.reason.startswith(reason)
    assert (error.transient, error.instance_down) == (transient, instance_down)


def test_evolution_empty_text_is_a_permanent_validation_error(evolution):
    error = gateway_error(lambda: send(EvolutionGateway(evolution_instance(evolution)), text=""))

    assert error.reason == "evolution 400: Text is required"
    assert not error.transient


def test_evolution_injected_failures_are_deterministic(evolution):
    gateway = EvolutionGateway(evolution_instance(evolution, typing_ms=0))
    evolution.fail_next(2)

    outcomes = []
    for _ in range(3):
        try:
            send(gateway)
            outcomes.append("ok")
        except GatewayError:
            outcomes.append("failed")
    evolution.fail_every(3)
    for _ in range(6):
        try:
            send(gateway)
            outcomes.append("ok")
        except GatewayError:
            outcomes.append("failed")

    assert outcomes == ["failed", "failed", "ok"] + ["ok", "ok", "failed"] * 2
    assert len(evolution.delivered) == 5


def test_gateway_messages_are_flattened():
    assert flatten_message([['instance requires property "number"', 'instance requires property "text"']]) == (
        'instance requires property "number"; instance requires property "text"'
    )
    assert flatten_message({"message": ["Text is required"]}) == "Text is required"
    assert flatten_message("We didn't find a session.\nPlease start it") == "We didn't find a session. Please start it"


# ---------------------------------------------------------------- Evolution: webhooks


def evolution_events(body: Any) -> list:
    return EvolutionGateway(SimpleNamespace(name=EVOLUTION_INSTANCE, url="http://unused", token="", options={})) \
        .parse_webhook(body)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="conversation"),
        pytest.param({"extended": True}, id="extended-text"),
        pytest.param({"event": "MESSAGES_UPSERT"}, id="upper-case-event"),
    ],
)
def test_evolution_inbound_message(kwargs):
    body = evo.upsert_body(instance=EVOLUTION_INSTANCE, remote_jid=EVOLUTION_JID, text="paguei", message_id="3EB0AA",
                           **kwargs)

    assert evolution_events(body) == [
        InboundMessage(provider_message_id="3EB0AA", chat_id=EVOLUTION_JID, phone=PHONE, text="paguei")
    ]


@pytest.mark.parametrize("alt_field", ["remoteJidAlt", "senderPn", "data.senderPn"])
def test_evolution_inbound_from_a_lid_takes_the_phone_from_the_alternate_jid(alt_field):
    body = evo.upsert_body(instance=EVOLUTION_INSTANCE, remote_jid=f"{LID}@lid", text="oi", message_id="3EB0BB",
                           alt_jid=EVOLUTION_JID, alt_field=alt_field)

    assert evolution_events(body) == [
        InboundMessage(provider_message_id="3EB0BB", chat_id=f"{LID}@lid", phone=PHONE, text="oi")
    ]


def test_evolution_inbound_from_a_lid_without_alternate_has_no_phone():
    body = evo.upsert_body(instance=EVOLUTION_INSTANCE, remote_jid=f"{LID}@lid", text="oi", message_id="3EB0CC")

    [event] = evolution_events(body)
    assert (event.chat_id, event.phone) == (f"{LID}@lid", "")


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"remote_jid": EVOLUTION_JID, "from_me": True}, id="our-own-message"),
        pytest.param({"remote_jid": "120363041967849074@g.us"}, id="group"),
        pytest.param({"remote_jid": "status@broadcast"}, id="status"),
    ],
)
def test_evolution_upserts_that_are_not_customer_replies_are_ignored(kwargs):
    assert evolution_events(evo.upsert_body(instance=EVOLUTION_INSTANCE, text="x", **kwargs)) == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("ERROR", ACK_FAILED), ("PENDING", ACK_SENT), ("SERVER_ACK", ACK_SENT), ("DELIVERY_ACK", ACK_DELIVERED),
        ("READ", ACK_READ), ("PLAYED", ACK_READ), (3, ACK_DELIVERED), (0, ACK_FAILED),
    ],
)
def test_evolution_message_update_is_an_ack(status, expected):
    body = evo.update_body(instance=EVOLUTION_INSTANCE, key_id="3EB0DD", status=status, remote_jid=EVOLUTION_JID)

    assert evolution_events(body) == [AckEvent(provider_message_id="3EB0DD", status=expected)]


def test_evolution_upper_case_update_event_is_accepted():
    body = evo.update_body(instance=EVOLUTION_INSTANCE, key_id="3EB0EE", status="READ", event="MESSAGES_UPDATE")

    assert evolution_events(body) == [AckEvent(provider_message_id="3EB0EE", status=ACK_READ)]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(evo.update_body(instance="b", key_id="3EB0", status="READ", from_me=False), id="inbound-read"),
        pytest.param(evo.update_body(instance="b", key_id="3EB0", status="DELETED"), id="unknown-status"),
        pytest.param(evo.update_body(instance="b", key_id="", status="READ"), id="no-id"),
    ],
)
def test_evolution_updates_without_an_ack_of_ours_are_ignored(body):
    assert evolution_events(body) == []


@pytest.mark.parametrize(
    ("state", "event", "expected"),
    [
        ("open", "connection.update", CONNECTED), ("connecting", "connection.update", CONNECTING),
        ("close", "connection.update", DOWN), ("refused", "connection.update", DOWN),
        ("open", "CONNECTION_UPDATE", CONNECTED),
    ],
)
def test_evolution_connection_update(state, event, expected):
    body = evo.connection_body(instance=EVOLUTION_INSTANCE, state=state, event=event)

    (event_,) = evolution_events(body)
    assert event_.state == expected
    # Not connected: the reason names the instance and says what to do; connected: none.
    assert (f"instance '{EVOLUTION_INSTANCE}'" in event_.reason) == (expected != CONNECTED)


@pytest.mark.parametrize(
    "body",
    [
        None, [], "messages.upsert", 42, {}, {"event": None}, {"event": 5, "data": {}},
        {"event": "qrcode.updated", "data": {"qrcode": {"base64": "..."}}},
        {"event": "contacts.upsert", "data": [{"remoteJid": EVOLUTION_JID}]},
        {"event": "send.message", "data": {"key": {"id": "3EB0", "fromMe": True}}},
        {"event": "messages.upsert"}, {"event": "messages.upsert", "data": None},
        {"event": "messages.upsert", "data": "text"}, {"event": "messages.upsert", "data": {"key": "x"}},
        {"event": "messages.upsert", "data": {"key": {"fromMe": False, "remoteJid": 5, "id": "x"}}},
        {"event": "messages.upsert", "data": {"key": {"fromMe": False, "remoteJid": EVOLUTION_JID}}},
        {"event": "messages.update", "data": {"keyId": 5, "status": "READ"}},
        {"event": "messages.update", "data": {"keyId": "x", "status": ["READ"]}},
        {"event": "messages.update", "data": {"keyId": "x", "status": True}},
        {"event": "messages.update", "data": [1, "x", None]},
        {"event": "connection.update", "data": {"state": "weird"}},
        {"event": "connection.update", "data": {"state": {"x": 1}}},
    ],
)
def test_evolution_malformed_or_unknown_webhooks_give_no_events(body):
    assert evolution_events(body) == []


def test_evolution_webhook_helpers_post_the_documented_shapes(evolution, receiver):
    result = send(EvolutionGateway(evolution_instance(evolution)))
    headers = {"X-Webhook-Token": "secret-in-header"}

    evolution.post_ack(receiver.url, message_id=result.provider_message_id, status="READ", headers=headers)
    evolution.post_inbound(receiver.url, phone=PHONE, text="já paguei", lid=LID)
    evolution.post_connection(receiver.url, state="close")

    events = [event for hook in receiver.received for event in evolution_events(hook.json)]
    assert events[0] == AckEvent(provider_message_id=result.provider_message_id, status=ACK_READ)
    assert (events[1].chat_id, events[1].phone, events[1].text) == (f"{LID}@lid", PHONE, "já paguei")
    assert events[2].state == DOWN
    assert receiver.received[0].headers["x-webhook-token"] == "secret-in-header"


# ---------------------------------------------------------------- WAHA: sending


def test_waha_shows_typing_then_sends(waha):
    started = time.monotonic()

    result = send(WahaGateway(waha_instance(waha)), text="oi")

    chat = {"session": WAHA_SESSION, "chatId": WAHA_CHAT}
    assert [(r.method, r.path, r.json) for r in waha.requests] == [
        ("POST", "/api/startTyping", chat),
        ("POST", "/api/stopTyping", chat),
        ("POST", "/api/sendText", {**chat, "text": "oi", "linkPreview": False}),
    ]
    assert all(r.headers["x-api-key"] == API_KEY for r in waha.requests)
    assert time.monotonic() - started >= TYPING_MS / MS - CLOCK_SLACK_SECONDS
    [message] = waha.delivered
    assert result.provider_message_id == message.id and message.id.startswith(f"true_{WAHA_CHAT}_")
    assert result.chat_id == WAHA_CHAT


@pytest.mark.parametrize("typing", [False, "false"])
def test_waha_typing_can_be_turned_off(waha, typing):
    send(WahaGateway(waha_instance(waha, typing=typing)))

    assert [r.path for r in waha.requests] == ["/api/sendText"]


@pytest.mark.parametrize(
    ("engine", "id_is_fakes"), [(wa.ENGINE_NOWEB, True), (wa.ENGINE_WEBJS, True), (wa.ENGINE_EMPTY, False)]
)
def test_waha_message_id_of_each_engine(engine, id_is_fakes):
    with FakeWaha(engine=engine) as fake:
        result = send(WahaGateway(waha_instance(fake, typing=False)))

        assert result.provider_message_id == (fake.messages[0].id if id_is_fakes else "")


def test_waha_session_option_overrides_the_instance_name(waha):
    send(WahaGateway(waha_instance(waha, name="acme-sp", session=WAHA_SESSION)))

    assert waha.requests[-1].json["session"] == WAHA_SESSION


def test_waha_converts_an_evolution_jid_to_a_chat_id(waha):
    result = send(WahaGateway(waha_instance(waha, typing=False)), chat_id=EVOLUTION_SHORT_JID)

    assert waha.requests[0].json["chatId"] == WAHA_SHORT_CHAT == result.chat_id


# ---------------------------------------------------------------- WAHA: numbers


def test_waha_check_number_exists(waha):
    check = WahaGateway(waha_instance(waha)).check_number(PHONE)

    assert check == NumberCheck(exists=True, chat_id=WAHA_CHAT)
    [request] = waha.requests
    assert (request.path, request.query) == ("/api/contacts/check-exists", {"phone": DIGITS, "session": WAHA_SESSION})


def test_waha_number_not_on_whatsapp_is_found_by_the_check_not_by_sending(waha):
    waha.not_on_whatsapp(PHONE)
    gateway = WahaGateway(waha_instance(waha, typing=False))

    assert gateway.check_number(PHONE) == NumberCheck(exists=False)
    send(gateway)  # "succeeds", as on the real WAHA
    assert waha.delivered == [] and len(waha.messages) == 1


def test_waha_number_without_nine_is_sent_to_the_returned_chat_id(waha):
    waha.registered_without_nine(PHONE)
    gateway = WahaGateway(waha_instance(waha, typing=False))

    check = gateway.check_number(PHONE)
    result = send(gateway, chat_id=check.chat_id)
    send(gateway)  # the 9-form goes nowhere

    assert check == NumberCheck(exists=True, chat_id=WAHA_SHORT_CHAT)
    assert result.chat_id == WAHA_SHORT_CHAT
    assert [(m.chat_id, m.reached) for m in waha.messages] == [(WAHA_SHORT_CHAT, True), (WAHA_CHAT, False)]


# ---------------------------------------------------------------- WAHA: state


@pytest.mark.parametrize(
    ("status", "expected"),
    [("WORKING", CONNECTED), ("STARTING", CONNECTING), ("SCAN_QR_CODE", CONNECTING), ("STOPPED", DOWN),
     ("FAILED", DOWN)],
)
def test_waha_connection_state(waha, status, expected):
    waha.set_state(status)

    assert WahaGateway(waha_instance(waha)).connection_state() == expected
    assert waha.requests[0].path == f"/api/sessions/{WAHA_SESSION}"


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda fake: waha_instance(fake, name="other"), id="unknown-session-404"),
        pytest.param(lambda fake: waha_instance(fake, token="wrong"), id="bad-key"),
        pytest.param(lambda fake: waha_instance(fake, url=closed_port_url()), id="unreachable"),
        pytest.param(
            lambda fake: fake.slow(SLOW_ANSWER_SECONDS) or waha_instance(fake, timeout_seconds=SHORT_TIMEOUT_SECONDS),
            id="timeout",
        ),
    ],
)
def test_waha_connection_state_is_down_when_it_cannot_be_asked(waha, broken):
    assert WahaGateway(broken(waha)).connection_state() == DOWN


# ---------------------------------------------------------------- WAHA: errors

WAHA_NOT_FOUND = "waha 404: We didn't find a session with name 'default'. Please start it first"


@pytest.mark.parametrize(
    ("setup", "call", "reason", "transient", "instance_down"),
    [
        pytest.param(lambda f: f.disconnect() or waha_instance(f), SEND, WAHA_NOT_FOUND, True, True,
                     id="stopped-typing-404"),
        pytest.param(lambda f: f.disconnect() or waha_instance(f, typing=False), SEND, WAHA_NOT_FOUND, True, True,
                     id="stopped-send-404"),
        pytest.param(lambda f: f.disconnect() or waha_instance(f), CHECK, WAHA_NOT_FOUND, True, True,
                     id="stopped-check-404"),
        pytest.param(lambda f: f.set_state("STARTING") or waha_instance(f, typing=False), SEND,
                     "waha 422: session is STARTING, not WORKING", True, True, id="starting-send-422"),
        pytest.param(lambda f: f.set_state("STARTING") or waha_instance(f), CHECK,
                     "waha 422: session is STARTING, not WORKING", True, True, id="starting-check-422"),
        pytest.param(lambda f: f.set_state("SCAN_QR_CODE") or waha_instance(f), SEND,
                     "waha 422: session is SCAN_QR_CODE, not WORKING", True, True, id="scan-qr-422"),
        pytest.param(lambda f: waha_instance(f, name="acme-sp"), SEND,
                     "waha 422: WAHA Core supports only the 'default' session: set the instance's session option",
                     True, True, id="core-other-session"),
        pytest.param(lambda f: f.fail_next(1) or waha_instance(f, typing=False), SEND,
                     "waha 500: Injected failure", True, False, id="engine-500"),
        pytest.param(lambda f: f.fail_next(1, status=429) or waha_instance(f, typing=False), SEND,
                     "waha 429: Injected failure", True, False, id="rate-limited"),
        pytest.param(lambda f: f.fail_next(1, status=400) or waha_instance(f, typing=False), SEND,
                     "waha 400: Injected failure", False, False, id="bad-request"),
        pytest.param(lambda f: waha_instance(f, token="wrong"), SEND,
                     "waha 401: gateway rejected the API key (wrong or rotated token", True, True, id="bad-key-send"),
        pytest.param(lambda f: waha_instance(f, token="wrong"), CHECK,
                     "waha 401: gateway rejected the API key (wrong or rotated token", True, True, id="bad-key-check"),
        pytest.param(lambda f: f.slow(SLOW_ANSWER_SECONDS) or waha_instance(
            f, typing=False, timeout_seconds=SHORT_TIMEOUT_SECONDS), SEND,
                     "waha did not answer POST /api/sendText within 0.3 s", True, False, id="timeout"),
        pytest.param(lambda f: waha_instance(f, url=closed_port_url()), CHECK,
                     "waha unreachable at http://127.0.0.1:", True, True, id="unreachable"),
        pytest.param(lambda f: waha_instance(f, url="waha.local:3000"), SEND,
                     "waha URL 'waha.local:3000' refused: must be an http:// or https:// URL", True, True, id="invalid-url"),
    ],
)
def test_waha_errors_are_classified(waha, setup, call, reason, transient, instance_down):
    gateway = WahaGateway(setup(waha))
    action = (lambda: send(gateway)) if call == SEND else (lambda: gateway.check_number(PHONE))

    error = gateway_error(action)

    assert error.reason.startswith(reason)
    assert (error.transient, error.instance_down) == (transient, instance_down)
    assert waha.delivered == []


# ---------------------------------------------------------------- WAHA: webhooks


def waha_events(body: Any) -> list:
    return WahaGateway(SimpleNamespace(name=WAHA_SESSION, url="http://unused", token="", options={})) \
        .parse_webhook(body)


@pytest.mark.parametrize("event", ["message", "message.any"])
def test_waha_inbound_message(event):
    body = wa.message_body(session=WAHA_SESSION, from_chat=WAHA_CHAT, text="paguei", message_id="false_x_AA",
                           event=event)

    assert waha_events(body) == [
        InboundMessage(provider_message_id="false_x_AA", chat_id=WAHA_CHAT, phone=PHONE, text="paguei")
    ]


def test_waha_inbound_from_a_lid_uses_the_noweb_sender_pn():
    body = wa.message_body(session=WAHA_SESSION, from_chat=f"{LID}@lid", text="oi", alt_jid=EVOLUTION_JID)

    [event] = waha_events(body)
    assert (event.chat_id, event.phone) == (f"{LID}@lid", PHONE)


def test_waha_inbound_from_a_lid_without_sender_pn_has_no_phone():
    [event] = waha_events(wa.message_body(session=WAHA_SESSION, from_chat=f"{LID}@lid", text="oi"))

    assert (event.chat_id, event.phone) == (f"{LID}@lid", "")


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"from_chat": WAHA_CHAT, "from_me": True, "event": "message.any"}, id="our-own-message"),
        pytest.param({"from_chat": "120363041967849074@g.us"}, id="group"),
        pytest.param({"from_chat": "status@broadcast"}, id="status"),
    ],
)
def test_waha_messages_that_are_not_customer_replies_are_ignored(kwargs):
    assert waha_events(wa.message_body(session=WAHA_SESSION, text="x", **kwargs)) == []


@pytest.mark.parametrize(
    ("ack", "ack_name", "expected"),
    [
        (-1, None, ACK_FAILED), (0, None, ACK_SENT), (1, None, ACK_SENT), (2, None, ACK_DELIVERED),
        (3, None, ACK_READ), (4, None, ACK_READ), (None, "READ", ACK_READ), ("2", "DEVICE", ACK_DELIVERED),
    ],
)
def test_waha_message_ack(ack, ack_name, expected):
    body = wa.ack_body(session=WAHA_SESSION, message_id=f"true_{WAHA_CHAT}_AB", ack=ack, ack_name=ack_name)

    assert waha_events(body) == [AckEvent(provider_message_id=f"true_{WAHA_CHAT}_AB", status=expected)]


@pytest.mark.parametrize(
    ("status", "expected"),
    [("WORKING", CONNECTED), ("STARTING", CONNECTING), ("SCAN_QR_CODE", CONNECTING), ("STOPPED", DOWN),
     ("FAILED", DOWN)],
)
def test_waha_session_status(status, expected):
    (event,) = waha_events(wa.session_status_body(session=WAHA_SESSION, status=status))

    assert event.state == expected
    assert (f"session '{WAHA_SESSION}'" in event.reason) == (expected != CONNECTED)


@pytest.mark.parametrize(
    "body",
    [
        None, [], "message", 7, {}, {"event": "message"}, {"event": "message", "payload": None},
        {"event": "message", "payload": "text"}, {"event": None, "payload": {}},
        {"event": "presence.update", "payload": {"id": WAHA_CHAT}},
        {"event": "state.change", "payload": {"state": "CONNECTED"}},
        {"event": "message", "payload": {"from": WAHA_CHAT, "body": "no id"}},
        {"event": "message", "payload": {"id": "x", "from": 5, "body": "x"}},
        {"event": "message", "payload": {"id": ["x"], "from": WAHA_CHAT}},
        {"event": "message.ack", "payload": {"id": "x", "ack": 9}},
        {"event": "message.ack", "payload": {"id": "x", "ack": True}},
        {"event": "message.ack", "payload": {"id": "x", "fromMe": False, "ack": 3}},
        {"event": "message.ack", "payload": {"ack": 3}},
        {"event": "session.status", "payload": {"status": "EXPLODED"}},
        {"event": "session.status", "payload": {"status": None}},
    ],
)
def test_waha_malformed_or_unknown_webhooks_give_no_events(body):
    assert waha_events(body) == []


# ---------------------------------------------------------------- WAHA: signed webhooks


def test_waha_signed_webhooks_verify_and_parse(waha, receiver):
    result = send(WahaGateway(waha_instance(waha, typing=False)))

    waha.post_ack(receiver.url, message_id=result.provider_message_id, ack=3, secret=WEBHOOK_SECRET)
    waha.post_inbound(receiver.url, phone=PHONE, text="já paguei", secret=WEBHOOK_SECRET)
    waha.post_session_status(receiver.url, status="STOPPED", secret=WEBHOOK_SECRET)

    for hook in receiver.received:
        assert verify_waha_signature(hook.raw, hook.headers, WEBHOOK_SECRET)
        assert hook.headers["x-webhook-hmac-algorithm"] == "sha512"
        assert hook.headers["x-webhook-request-id"] == hook.json["id"]
        assert hook.headers["x-webhook-timestamp"] == str(hook.json["timestamp"])
    events = [event for hook in receiver.received for event in waha_events(hook.json)]
    assert events[0] == AckEvent(provider_message_id=result.provider_message_id, status=ACK_READ)
    assert (events[1].phone, events[1].text) == (PHONE, "já paguei")
    assert events[2].state == DOWN and "is stopped" in events[2].reason


@pytest.fixture
def signed_hook(receiver):
    wa.post_webhook(receiver.url, wa.session_status_body(session=WAHA_SESSION, status="WORKING"), secret=WEBHOOK_SECRET)
    return receiver.received[0]


def test_waha_signature_header_names_are_case_insensitive(signed_hook):
    upper = {name.upper(): value for name, value in signed_hook.headers.items()}

    assert verify_waha_signature(signed_hook.raw, upper, WEBHOOK_SECRET)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda raw, headers: (raw, headers, "another-secret"), id="wrong-secret"),
        pytest.param(lambda raw, headers: (raw.replace(b"WORKING", b"STOPPED"), headers, WEBHOOK_SECRET),
                     id="altered-body"),
        pytest.param(lambda raw, headers: (raw, {k: v for k, v in headers.items() if k != "x-webhook-hmac"},
                                           WEBHOOK_SECRET), id="missing-signature"),
        pytest.param(lambda raw, headers: (raw, {**headers, "x-webhook-hmac": "00" * 64}, WEBHOOK_SECRET),
                     id="forged-signature"),
        pytest.param(lambda raw, headers: (raw, {**headers, "x-webhook-hmac-algorithm": "sha256"}, WEBHOOK_SECRET),
                     id="other-algorithm"),
        pytest.param(lambda raw, headers: (raw, headers, ""), id="empty-secret"),
    ],
)
def test_waha_signature_rejects(signed_hook, tamper):
    raw, headers, secret = tamper(signed_hook.raw, signed_hook.headers)

    assert not verify_waha_signature(raw, headers, secret)


def test_unsigned_waha_webhook_does_not_verify(receiver):
    wa.post_webhook(receiver.url, wa.session_status_body(session=WAHA_SESSION, status="WORKING"))

    assert not verify_waha_signature(receiver.received[0].raw, receiver.received[0].headers, WEBHOOK_SECRET)


# ---------------------------------------------------------------- fakes' HTTP controls


def test_fakes_can_be_driven_over_http(evolution):
    control = f"{evolution.url}/__fake__/control"
    gateway = EvolutionGateway(evolution_instance(evolution, typing_ms=0))

    requests.post(control, json={"not_on_whatsapp": [PHONE]}, timeout=5).raise_for_status()
    assert gateway.check_number(PHONE) == NumberCheck(exists=False)
    requests.post(f"{evolution.url}/__fake__/reset", timeout=5).raise_for_status()
    requests.post(control, json={"state": "close"}, timeout=5).raise_for_status()
    assert gateway.connection_state() == DOWN
    requests.post(control, json={"state": "open", "fail_next": 1, "fail_status": 502}, timeout=5).raise_for_status()
    assert gateway_error(lambda: send(gateway)).reason == "evolution 502: Injected failure"
    send(gateway)

    messages = requests.get(f"{evolution.url}/__fake__/messages", timeout=5).json()
    recorded = requests.get(f"{evolution.url}/__fake__/requests", timeout=5).json()
    assert [m["chat_id"] for m in messages] == [EVOLUTION_JID]
    assert [r["path"] for r in recorded][-2:] == [f"/message/sendText/{EVOLUTION_INSTANCE}"] * 2
    assert requests.post(control, json={"state": "bogus"}, timeout=5).status_code == 400
