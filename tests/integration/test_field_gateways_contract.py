"""Gateways as they really are, over real HTTP and without a database: the
fakes answer what the real Evolution 2.3.6 and WAHA Core 2024.10.8 answered
(replayed from ../shared/gateways/*-answers.txt), failures that hit every
contact alike are the instance's, a send whose answer never came is
ambiguous, and find_sent asks the gateway whether it went out."""
from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from billing.adapters.providers.base import (
    CONNECTED,
    CONNECTING,
    DOWN,
    ConnectionEvent,
    ConnectionStatus,
    GatewayError,
    LookupUnavailable,
    SendResult,
)
from billing.adapters.providers.evolution import EvolutionGateway
from billing.adapters.providers.waha import WahaGateway, webhook_signature_ok
from billing.clock import utcnow
from tests.fakes import WebhookReceiver, closed_port_url
from tests.fakes import waha as wa
from tests.fakes.evolution import FakeEvolution
from tests.fakes.waha import FakeWaha

#: The verbatim answers of the real servers.
GATEWAYS_DIR = Path(__file__).resolve().parents[3] / "shared" / "gateways"
EVOLUTION_ANSWERS = GATEWAYS_DIR / "evolution-2.3.6-answers.txt"
WAHA_ANSWERS = GATEWAYS_DIR / "waha-2024.10.8-answers.txt"
OBSERVED_WEBHOOKS = GATEWAYS_DIR / "webhooks-observed.txt"
#: The key the real servers were run with.
REAL_KEY = "testkey123"

PHONE = "+5511987654321"
DIGITS = "5511987654321"
EVOLUTION_JID = f"{DIGITS}@s.whatsapp.net"
WAHA_CHAT = f"{DIGITS}@c.us"
API_KEY = "test-key"
TEXT = "Olá Ana, sua fatura de R$ 150,00 venceu."
#: A read timeout far below the fakes' hang, so the hang is certain to be missed.
SHORT_TIMEOUT_SECONDS = 0.5
HANG_SECONDS = 10.0
#: Longer than the adapters' clock-skew allowance (30 s): a message this old is not "ours".
OLD_MESSAGE_SECONDS = 120


def _answers(path: Path) -> list[SimpleNamespace]:
    """The request/answer pairs of an answers file, in order."""
    head = re.compile(r"^(GET|POST|PUT|DELETE) (\S+)(?:\s+\[(.*?)\])?$")
    lines = path.read_text().splitlines()
    found, index = [], 0
    while index < len(lines):
        match = head.match(lines[index])
        index += 1
        if not match:
            continue
        body = None
        if lines[index].startswith("   body: "):
            body, index = lines[index][len("   body: "):], index + 1
        status = int(re.match(r"-> HTTP/1.1 (\d+)", lines[index]).group(1))
        answer = lines[index + 1].strip() if index + 1 < len(lines) else ""
        index += 2
        method, target, auth = match.groups()
        found.append(SimpleNamespace(method=method, target=target, auth=auth, body=body, status=status, answer=answer))
    return found


def _replay(base: str, pair: SimpleNamespace, *, key_header: str) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if pair.auth:
        name, _, value = pair.auth.partition(": ")
        headers[name] = value
    assert pair.auth is None or pair.auth.startswith(key_header)
    return requests.request(pair.method, base + pair.target, data=pair.body, headers=headers, timeout=5)


def evolution_instance(fake: Any, *, name: str = "billing", token: str = API_KEY, url: str = "", **options: Any):
    options.setdefault("typing_ms", 0)
    return SimpleNamespace(name=name, url=url or fake.url, token=token, options=options, provider="evolution")


def waha_instance(fake: Any, *, name: str = "default", token: str = API_KEY, url: str = "", **options: Any):
    options.setdefault("typing", False)
    return SimpleNamespace(name=name, url=url or fake.url, token=token, options=options, provider="waha")


def failure(call) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        call()
    return info.value


@pytest.fixture
def evolution():
    with FakeEvolution(api_key=API_KEY, instance="billing") as fake:
        yield fake


@pytest.fixture
def waha():
    with FakeWaha(api_key=API_KEY, session="default") as fake:
        yield fake


# ------------------------------------------------------------ the fakes answer as the real servers did

#: (index in evolution-2.3.6-answers.txt, the fake's instance, its state): the
#: pairs about instance-wide failures and the shapes the adapter reads.
EVOLUTION_REPLAYS = [
    (2, "test", "close"), (3, "test", "close"),                               # no / wrong key: 401
    (4, "other", "close"), (5, "other", "close"), (39, "other", "close"),     # unknown instance: 404
    (9, "test", "close"), (11, "test", "close"), (27, "test", "close"),      # closed: state, 500 Connection Closed
    (12, "test", "close"), (14, "test", "close"), (15, "test", "close"),     # v1 body on v2, missing fields: 400
    (16, "test", "close"), (28, "test", "close"),
    (13, "test", "close"), (19, "test", "close"),                             # wrong key on send and check: 401
    (17, "test", "close"), (18, "test", "close"), (31, "test", "close"),     # number check on a closed instance
    (30, "test", "close"), (32, "test", "close"),                             # unknown route, unknown instance
    (20, "test", "connecting"),
    (42, "fresh", "unstarted"), (44, "fresh", "unstarted"), (45, "fresh", "unstarted"), (46, "fresh", "unstarted"),
]


@pytest.mark.parametrize(("index", "instance", "state"), EVOLUTION_REPLAYS)
def test_fake_evolution_answers_as_the_real_2_3_6(index, instance, state):
    pair = _answers(EVOLUTION_ANSWERS)[index]
    with FakeEvolution(api_key=REAL_KEY, instance=instance) as fake:
        fake.set_state(state)
        answer = _replay(fake.url, pair, key_header="apikey")

    assert (answer.status_code, answer.json()) == (pair.status, json.loads(pair.answer))


#: (index in waha-2024.10.8-answers.txt, the session's status). Core does not
#: enforce the key: the fake runs without one here.
WAHA_REPLAYS = [
    (10, "STOPPED"), (11, "STOPPED"), (17, "STOPPED"), (18, "STOPPED"), (20, "STOPPED"), (22, "STOPPED"),
    (48, "STOPPED"),
    (19, "STOPPED"), (43, "STARTING"),                                   # Core: only the 'default' session
    (27, "STARTING"), (28, "STARTING"), (29, "STARTING"), (30, "STARTING"), (31, "STARTING"),
    (32, "STARTING"), (33, "STARTING"),
    (42, "STARTING"), (45, "STARTING"),
]


@pytest.mark.parametrize(("index", "status"), WAHA_REPLAYS)
def test_fake_waha_answers_as_the_real_core_2024_10_8(index, status):
    pair = _answers(WAHA_ANSWERS)[index]
    with FakeWaha(api_key=None, session="default") as fake:
        fake.set_state(status)
        answer = _replay(fake.url, pair, key_header="X-Api-Key")

    assert (answer.status_code, answer.json()) == (pair.status, json.loads(pair.answer))


# ------------------------------------------------------------ failures that hit every contact are the instance's


SEND, CHECK = "send", "check"


@pytest.mark.parametrize(
    ("setup", "call", "reason"),
    [
        pytest.param(lambda f: evolution_instance(f, token="rotated"), SEND,
                     "evolution 401: gateway rejected the API key (wrong or rotated token", id="wrong-token-send"),
        pytest.param(lambda f: evolution_instance(f, token="rotated"), CHECK,
                     "evolution 401: gateway rejected the API key (wrong or rotated token", id="wrong-token-check"),
        pytest.param(lambda f: evolution_instance(f, name="gone"), SEND,
                     'evolution 404: The "gone" instance does not exist', id="unknown-instance-send"),
        pytest.param(lambda f: evolution_instance(f, name="gone"), CHECK,
                     'evolution 404: The "gone" instance does not exist', id="unknown-instance-check"),
        pytest.param(lambda f: evolution_instance(f, evolution_body="v1"), SEND,
                     'evolution 400: instance requires property "text" (the server rejects this request shape',
                     id="v1-body-on-v2"),
    ],
)
def test_evolution_instance_wide_failures_take_the_instance_down(evolution, setup, call, reason):
    gateway = EvolutionGateway(setup(evolution))
    action = {SEND: lambda: gateway.send_text(phone=PHONE, chat_id="", text=TEXT, contact_id=1),
              CHECK: lambda: gateway.check_number(PHONE)}[call]

    error = failure(action)

    assert error.reason.startswith(reason)
    assert (error.transient, error.instance_down, error.ambiguous) == (True, True, False)
    assert evolution.delivered == []


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        pytest.param(lambda f: waha_instance(f, token="rotated"),
                     "waha 401: gateway rejected the API key (wrong or rotated token", id="wrong-token"),
        pytest.param(lambda f: waha_instance(f, name="loja1"),
                     "waha 422: WAHA Core supports only the 'default' session: set the instance's session option "
                     "(or name) to 'default'", id="core-non-default-session"),
        pytest.param(lambda f: f.disconnect() or waha_instance(f),
                     "waha 404: We didn't find a session with name 'default'", id="stopped"),
    ],
)
def test_waha_instance_wide_failures_take_the_instance_down(waha, setup, reason):
    error = failure(lambda: WahaGateway(setup(waha)).send_text(phone=PHONE, chat_id="", text=TEXT, contact_id=1))

    assert error.reason.startswith(reason)
    assert (error.transient, error.instance_down, error.ambiguous) == (True, True, False)
    assert waha.delivered == []


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param(lambda f: None, ConnectionStatus(CONNECTED, ""), id="open"),
        pytest.param(lambda f: f.disconnect(), ConnectionStatus(
            DOWN, "evolution: instance 'billing' is not connected to WhatsApp (connect it and scan its QR code)"),
            id="close"),
        pytest.param(lambda f: f.set_state("connecting"), ConnectionStatus(
            CONNECTING, "evolution: instance 'billing' is not connected to WhatsApp (connect it and scan its QR code)"),
            id="connecting-same-reason-as-close"),
        pytest.param(lambda f: f.set_state("refused"), ConnectionStatus(
            DOWN, "evolution: WhatsApp refused to pair instance 'billing' (QR code limit reached: connect it again)"),
            id="refused"),
    ],
)
def test_evolution_connection_status_says_why(evolution, setup, expected):
    setup(evolution)

    assert EvolutionGateway(evolution_instance(evolution)).connection_status() == expected


@pytest.mark.parametrize(
    ("instance", "reason"),
    [
        pytest.param(lambda f: evolution_instance(f, token="rotated"),
                     "evolution 401: gateway rejected the API key", id="wrong-token"),
        pytest.param(lambda f: evolution_instance(f, name="gone"),
                     'evolution 404: The "gone" instance does not exist', id="unknown-instance"),
        pytest.param(lambda f: evolution_instance(f, url=closed_port_url()),
                     "evolution unreachable at http://127.0.0.1:", id="unreachable"),
    ],
)
def test_evolution_connection_status_raises_the_reason_it_cannot_ask(evolution, instance, reason):
    gateway = EvolutionGateway(instance(evolution))

    error = failure(gateway.connection_status)

    assert error.reason.startswith(reason) and error.instance_down
    assert gateway.connection_state() == DOWN  # the old call still never raises


@pytest.mark.parametrize(
    ("status", "expected"),
    [("WORKING", ConnectionStatus(CONNECTED, "")),
     ("STARTING", ConnectionStatus(CONNECTING, "waha: session 'default' is starting, not connected to WhatsApp yet")),
     ("SCAN_QR_CODE", ConnectionStatus(CONNECTING, "waha: session 'default' waits for its QR code to be scanned")),
     ("STOPPED", ConnectionStatus(DOWN, "waha: session 'default' is stopped (start it: POST "
                                        "/api/sessions/default/start)")),
     ("FAILED", ConnectionStatus(DOWN, "waha: session 'default' failed (restart it, or scan its QR code again)"))],
)
def test_waha_connection_status_says_why(waha, status, expected):
    waha.set_state(status)

    assert WahaGateway(waha_instance(waha)).connection_status() == expected


def test_waha_connection_status_of_a_session_core_does_not_have(waha):
    error = failure(WahaGateway(waha_instance(waha, name="loja1")).connection_status)

    assert error.reason == "waha 404: no session 'loja1' on the gateway (WAHA Core has only the 'default' session)"
    assert (error.transient, error.instance_down) == (True, True)


# ------------------------------------------------------------ ambiguous sends


def test_a_hung_evolution_send_is_ambiguous_and_find_sent_finds_it(evolution):
    gateway = EvolutionGateway(evolution_instance(evolution, timeout_seconds=SHORT_TIMEOUT_SECONDS))
    since = utcnow()
    evolution.hang_next(1, seconds=HANG_SECONDS)

    error = failure(lambda: gateway.send_text(phone=PHONE, chat_id=EVOLUTION_JID, text=TEXT, contact_id=1))

    assert (error.transient, error.ambiguous, error.instance_down) == (True, True, False)
    assert error.reason == f"evolution did not answer POST /message/sendText/billing within {SHORT_TIMEOUT_SECONDS:g} s"
    (went_out,) = evolution.messages  # it did go out
    assert gateway.find_sent(chat_id=EVOLUTION_JID, text=TEXT, since=since) == SendResult(went_out.id, EVOLUTION_JID)
    assert gateway.find_sent(chat_id=DIGITS, text=TEXT, since=since) == SendResult(went_out.id, EVOLUTION_JID)
    found = evolution.requests_to("/chat/findMessages/billing")[0]
    assert found.json == {"where": {"key": {"remoteJid": EVOLUTION_JID, "fromMe": True}}, "page": 1, "offset": 50}
    assert found.headers["apikey"] == API_KEY


def test_a_hung_waha_send_is_ambiguous_and_find_sent_finds_it(waha):
    gateway = WahaGateway(waha_instance(waha, timeout_seconds=SHORT_TIMEOUT_SECONDS))
    since = utcnow()
    waha.hang_next(1, seconds=HANG_SECONDS)

    error = failure(lambda: gateway.send_text(phone=PHONE, chat_id=WAHA_CHAT, text=TEXT, contact_id=1))

    assert (error.transient, error.ambiguous, error.instance_down) == (True, True, False)
    (went_out,) = waha.messages
    assert gateway.find_sent(chat_id=WAHA_CHAT, text=TEXT, since=since) == SendResult(went_out.id, WAHA_CHAT)
    listed = waha.requests_to(f"/api/default/chats/{WAHA_CHAT}/messages")[0]
    assert listed.method == "GET" and listed.query["limit"] == "100"


@pytest.mark.parametrize("fake_class", [FakeEvolution, FakeWaha])
def test_a_connection_dropped_after_the_send_is_ambiguous(fake_class):
    with fake_class(api_key=API_KEY) as fake:
        instance = evolution_instance(fake) if fake_class is FakeEvolution else waha_instance(fake)
        gateway = (EvolutionGateway if fake_class is FakeEvolution else WahaGateway)(instance)
        fake.drop_next(1)

        error = failure(lambda: gateway.send_text(phone=PHONE, chat_id="", text=TEXT, contact_id=1))

        assert (error.transient, error.ambiguous, error.instance_down) == (True, True, False)
        assert "dropped the connection" in error.reason
        assert len(fake.messages) == 1
        gateway.send_text(phone=PHONE, chat_id="", text=TEXT, contact_id=1)  # the next answers normally
        assert len(fake.messages) == 2


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        pytest.param(closed_port_url, "unreachable at http://127.0.0.1:", id="refused"),
        pytest.param(lambda: "http://gateway.invalid:8080", "unreachable at http://gateway.invalid:8080", id="dns"),
    ],
)
def test_a_request_that_never_reached_the_gateway_is_not_ambiguous(url, reason):
    for gateway in (EvolutionGateway(evolution_instance(None, url=url())), WahaGateway(waha_instance(None, url=url()))):
        error = failure(lambda: gateway.send_text(phone=PHONE, chat_id="", text=TEXT, contact_id=1))

        assert reason in error.reason
        assert (error.transient, error.ambiguous, error.instance_down) == (True, False, True)


def test_an_http_error_answer_is_not_ambiguous(evolution):
    evolution.fail_next(1, status=500)

    error = failure(lambda: EvolutionGateway(evolution_instance(evolution)).send_text(
        phone=PHONE, chat_id="", text=TEXT, contact_id=1))

    assert (error.transient, error.ambiguous) == (True, False)


def test_a_waha_typing_call_without_answer_is_not_ambiguous(waha):
    # "typing..." comes before the message: no answer to it says the message was not sent.
    waha.slow(HANG_SECONDS)
    gateway = WahaGateway(waha_instance(waha, typing=True, typing_ms=0, timeout_seconds=SHORT_TIMEOUT_SECONDS))

    error = failure(lambda: gateway.send_text(phone=PHONE, chat_id="", text=TEXT, contact_id=1))

    assert "startTyping" in error.reason and (error.transient, error.ambiguous) == (True, False)
    assert waha.messages == []


# ------------------------------------------------------------ find_sent: what the gateway can and cannot tell


def test_evolution_find_sent_is_none_when_the_history_does_not_show_it(evolution):
    gateway = EvolutionGateway(evolution_instance(evolution))
    gateway.send_text(phone=PHONE, chat_id="", text="an earlier reminder", contact_id=1)
    since = utcnow()

    assert gateway.find_sent(chat_id=EVOLUTION_JID, text=TEXT, since=since) is None
    gateway.send_text(phone=PHONE, chat_id="", text=TEXT, contact_id=2)
    evolution.messages[-1].timestamp -= OLD_MESSAGE_SECONDS  # the same text, sent long before: not this attempt
    assert gateway.find_sent(chat_id=EVOLUTION_JID, text=TEXT, since=since) is None
    assert gateway.find_sent(chat_id=EVOLUTION_JID, text=TEXT, since=since - timedelta(seconds=OLD_MESSAGE_SECONDS)) \
        == SendResult(evolution.messages[-1].id, EVOLUTION_JID)


def test_evolution_find_sent_cannot_tell_without_a_message_store(evolution):
    gateway = EvolutionGateway(evolution_instance(evolution))
    gateway.send_text(phone=PHONE, chat_id="", text=TEXT, contact_id=1)
    evolution.keep_messages(False)  # DATABASE_SAVE_DATA_NEW_MESSAGE off: an empty history proves nothing

    with pytest.raises(LookupUnavailable, match="no stored messages for 5511987654321@s.whatsapp.net"):
        gateway.find_sent(chat_id=EVOLUTION_JID, text=TEXT, since=utcnow())


def test_waha_find_sent_is_none_when_the_chat_does_not_show_it(waha):
    gateway = WahaGateway(waha_instance(waha))
    since = utcnow()

    assert gateway.find_sent(chat_id=WAHA_CHAT, text=TEXT, since=since) is None
    gateway.send_text(phone=PHONE, chat_id="", text="another text", contact_id=1)
    assert gateway.find_sent(chat_id=WAHA_CHAT, text=TEXT, since=since) is None


@pytest.mark.parametrize(
    ("gateway", "reason"),
    [
        pytest.param(lambda e, w: w.keep_messages(False) or WahaGateway(waha_instance(w)),
                     "waha 400: Enable NOWEB store", id="waha-noweb-store-off"),
        pytest.param(lambda e, w: w.disconnect() or WahaGateway(waha_instance(w)),
                     "waha 404: We didn't find a session with name 'default'", id="waha-stopped"),
        pytest.param(lambda e, w: EvolutionGateway(evolution_instance(e, token="rotated")),
                     "evolution 401: gateway rejected the API key", id="evolution-wrong-token"),
        pytest.param(lambda e, w: EvolutionGateway(evolution_instance(e, name="gone")),
                     'evolution 404: The "gone" instance does not exist', id="evolution-unknown-instance"),
        pytest.param(lambda e, w: w.require_api_key(None) or EvolutionGateway(evolution_instance(w)),
                     "evolution 404: Cannot POST /chat/findMessages/billing", id="endpoint-missing"),
        pytest.param(lambda e, w: e.require_api_key(None) or WahaGateway(waha_instance(e)),
                     "waha 404: ", id="waha-endpoint-missing"),
        pytest.param(lambda e, w: EvolutionGateway(evolution_instance(e, url=closed_port_url())),
                     "evolution unreachable at", id="unreachable"),
    ],
)
def test_find_sent_cannot_tell(evolution, waha, gateway, reason):
    with pytest.raises(LookupUnavailable) as info:
        gateway(evolution, waha).find_sent(chat_id=WAHA_CHAT, text=TEXT, since=utcnow())

    assert info.value.reason.startswith(reason)
    assert not isinstance(info.value, GatewayError)  # callers must not mistake it for a failed send


@pytest.mark.parametrize("adapter", [EvolutionGateway, WahaGateway])
def test_find_sent_cannot_read_an_unexpected_answer(adapter):
    with WebhookReceiver() as odd:  # answers {"ok": true} to anything
        instance = (evolution_instance if adapter is EvolutionGateway else waha_instance)(None, url=odd.url)
        with pytest.raises(LookupUnavailable, match="unexpected"):
            adapter(instance).find_sent(chat_id=WAHA_CHAT, text=TEXT, since=utcnow())


# ------------------------------------------------------------ webhooks as the real servers sent them


def _observed() -> list[SimpleNamespace]:
    """The webhook requests of webhooks-observed.txt, in order."""
    found, path = [], None
    for line in OBSERVED_WEBHOOKS.read_text().splitlines():
        if line.startswith("POST "):
            path = line.split()[1]
        elif line.strip().startswith("headers: "):
            headers = json.loads(line.strip()[len("headers: "):])
        elif line.strip().startswith("body: "):
            found.append(SimpleNamespace(path=path, headers=headers, body=json.loads(line.strip()[len("body: "):])))
    return found


def test_the_observed_webhooks_are_unsigned_and_parse():
    hooks = _observed()
    evolution = EvolutionGateway(SimpleNamespace(name="gwevo", url="http://unused", token="", options={}))
    waha = WahaGateway(SimpleNamespace(name="default", url="http://unused", token="", options={}))

    events = [(evolution if "/evolution/" in h.path else waha).parse_webhook(h.body) for h in hooks]

    assert all("X-Webhook-Hmac" not in h.headers for h in hooks)
    assert [h.path.rsplit("/", 1)[-1] for h in hooks][-1] == "connection-update"  # Webhook by Events
    assert [[e.state for e in found] for found in events] == [
        [CONNECTING], [DOWN], [DOWN], [CONNECTING], [DOWN], [CONNECTING]]
    assert events[1] == [ConnectionEvent(DOWN, "evolution: instance 'gwevo' was removed from the gateway "
                                               "(remove.instance)")]
    assert events[2] == [ConnectionEvent(DOWN, "evolution: instance 'gwevo' was deleted on the gateway "
                                               "(instance.delete)")]
    assert [evolution.foreign_source(h.body) for h in hooks if "/evolution/" in h.path] == ["", "", "", ""]
    assert [waha.foreign_source(h.body) for h in hooks if "/waha/" in h.path] == ["", ""]
    other = EvolutionGateway(SimpleNamespace(name="loja2", url="http://unused", token="", options={}))
    assert other.foreign_source(hooks[0].body) == "gwevo"
    assert WahaGateway(SimpleNamespace(name="x", url="u", token="", options={"session": "loja"})).foreign_source(
        hooks[3].body) == "default"


@pytest.mark.parametrize(
    ("headers", "required", "ok"),
    [
        pytest.param(lambda raw: {}, False, True, id="unsigned-core"),
        pytest.param(lambda raw: {}, True, False, id="unsigned-but-required"),
        pytest.param(lambda raw: wa.signature_headers(raw, secret="s3cret", request_id="1", timestamp_ms=1), False,
                     True, id="signed"),
        pytest.param(lambda raw: wa.signature_headers(raw, secret="s3cret", request_id="1", timestamp_ms=1), True,
                     True, id="signed-required"),
        pytest.param(lambda raw: wa.signature_headers(raw, secret="wrong", request_id="1", timestamp_ms=1), False,
                     False, id="bad-signature-is-never-ignored"),
        pytest.param(lambda raw: {"x-webhook-hmac": ""}, False, False, id="empty-signature"),
    ],
)
def test_waha_hmac_rule(headers, required, ok):
    raw = json.dumps(wa.session_status_body(session="default", status="WORKING", core=True)).encode()

    assert webhook_signature_ok(raw, headers(raw), secret="s3cret", required=required) is ok


def test_core_webhook_bodies_have_no_id_or_timestamp():
    body = wa.ack_body(session="default", message_id="true_x_1", ack=3, core=True)
    observed = next(h.body for h in _observed() if h.body["event"] == "session.status")

    assert "id" not in body and "timestamp" not in body
    assert set(body) == set(observed)


# ------------------------------------------------------------ the fakes' new switches over HTTP


def test_fake_hang_drop_and_store_switches_work_over_http(evolution):
    control = f"{evolution.url}/__fake__/control"
    gateway = EvolutionGateway(evolution_instance(evolution, timeout_seconds=SHORT_TIMEOUT_SECONDS))

    requests.post(control, json={"hang_next": 1, "hang_seconds": HANG_SECONDS}, timeout=5).raise_for_status()
    started = time.monotonic()
    assert failure(lambda: gateway.send_text(phone=PHONE, chat_id="", text=TEXT, contact_id=1)).ambiguous
    assert time.monotonic() - started < HANG_SECONDS  # the client gave up; the fake still holds the answer
    requests.post(control, json={"drop_next": 1}, timeout=5).raise_for_status()
    assert failure(lambda: gateway.send_text(phone=PHONE, chat_id="", text=TEXT, contact_id=2)).ambiguous
    requests.post(control, json={"message_store": False}, timeout=5).raise_for_status()
    with pytest.raises(LookupUnavailable):
        gateway.find_sent(chat_id=EVOLUTION_JID, text=TEXT, since=utcnow())

    listed = requests.get(f"{evolution.url}/__fake__/messages", timeout=5).json()
    assert [m["text"] for m in listed] == [TEXT, TEXT] and all(m["timestamp"] > 0 for m in listed)
