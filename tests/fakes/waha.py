"""A fake WAHA server (Core 2024.10 behaviour), and its webhook shapes.

Answers copy a real Core 2024.10.8's (``/work/shared/gateways/waha-2024.10.8-answers.txt``):
a STOPPED session answers sends and checks with 404 "We didn't find a
session", a STARTING one with 422 "Session status is not as expected", a
session other than ``default`` with Core's 422. Unlike the real Core, the
API key is enforced when given (newer WAHA versions do). A number that is
not on WhatsApp still "succeeds" (the message goes nowhere), as on the real one.
``GET /api/{session}/chats/{chatId}/messages`` lists the messages the fake
accepted (NOWEB with its store on); ``keep_messages(False)`` gives NOWEB's 400
"Enable NOWEB store". ``hang_next`` / ``drop_next`` make a send go out without
its answer arriving.

Webhooks: unsigned ones (no ``secret``) have Core 2024.10.8's envelope, with
no ``id`` or ``timestamp``, exactly as a real Core sends them; signed ones have
the Plus envelope and headers.

Usage::

    with FakeWaha(api_key="k") as fake:
        fake.set_state("STARTING")
        fake.post_ack(webhook_url, message_id=fake.messages[0].id, ack=3, secret="s")

Run standalone: ``python -m tests.fakes.waha --port 3001 --api-key k``.
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import requests
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Request, Response

from tests.fakes import FakeGateway, SentMessage, digits, json_response, post_json, post_raw, serve_from_command_line

#: WAHA's chat id domain for phone numbers.
CHAT_DOMAIN = "c.us"
MESSAGE_ID_HEX_BYTES = 10
#: Our own number, as webhooks' ``me`` shows it.
OWN_CHAT_ID = "5511900000000@c.us"
MS_PER_SECOND = 1000

STATE_WORKING, STATE_STARTING, STATE_SCAN_QR = "WORKING", "STARTING", "SCAN_QR_CODE"
STATE_STOPPED, STATE_FAILED = "STOPPED", "FAILED"
#: Send answers by engine: NOWEB's Baileys key, WEBJS's serialized id, or an empty body.
ENGINE_NOWEB, ENGINE_WEBJS, ENGINE_EMPTY = "NOWEB", "WEBJS", "EMPTY"
#: ack codes and the word WAHA puts in ``ackName``.
ACK_NAMES = {-1: "ERROR", 0: "PENDING", 1: "SERVER", 2: "DEVICE", 3: "READ", 4: "PLAYED"}

CORE_ONLY_DEFAULT = (
    "WAHA Core support only 'default' session. If you want to run more then one WhatsApp account - "
    "please get WAHA PLUS version. Check this out: https://waha.devlike.pro/"
)
STORE_DISABLED = (
    'Enable NOWEB store "config.noweb.store.enabled=True" and "config.noweb.store.full_sync=True" when starting a '
    "new session. Read more: https://waha.devlike.pro/docs/engines/noweb#store"
)
INJECTED_FAILURE = "Injected failure"
HTTP_SERVER_ERROR = 500
#: How many messages the chat messages endpoint lists when the request gives no limit.
DEFAULT_MESSAGES_LIMIT = 100
#: Core 2024.10.8's ``environment`` block in every webhook.
CORE_ENVIRONMENT = {"version": "2024.10.8", "engine": ENGINE_NOWEB, "tier": "CORE", "browser": "/usr/bin/chromium"}


def _error(status: int, message: Any) -> Response:
    """NestJS's error shape, which WAHA uses for most errors."""
    return json_response({"statusCode": status, "message": message, "error": HTTP_STATUS_CODES.get(status, "Error")},
                         status=status)


def _not_found(session: str) -> Response:
    return _error(404, f"We didn't find a session with name '{session}'.\n"
                       f"Please start it first by using POST /api/sessions/{session}/start request")


def _engine_error(path: str, message: str) -> Response:
    """A 500 from the engine: WAHA wraps the exception with the request."""
    body = {
        "statusCode": HTTP_SERVER_ERROR, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "exception": {"message": message, "name": "Error", "stack": f"Error: {message}\n    at fake"},
        "request": {"path": path, "method": "POST", "body": {}},
        "version": {"version": "2024.10.8", "engine": ENGINE_NOWEB, "tier": "CORE"},
    }
    return json_response(body, status=HTTP_SERVER_ERROR)


class FakeWaha(FakeGateway):
    """A fake WAHA with one session.

    Parameters:
      api_key: when set, other ``X-Api-Key`` headers get 401.
      session: the session name it has.
      engine: ``NOWEB`` (default), ``WEBJS`` or ``EMPTY``: the send answer's shape.
      core: answer Core's 422 for other session names (else 404 like Plus).
      host, port: where to listen (port 0: any free one).
    """

    connected_state = STATE_WORKING
    disconnected_state = STATE_STOPPED
    states = (STATE_WORKING, STATE_STARTING, STATE_SCAN_QR, STATE_STOPPED, STATE_FAILED)

    def __init__(
        self, *, api_key: str | None = None, session: str = "default", engine: str = ENGINE_NOWEB, core: bool = True,
        **server: Any,
    ) -> None:
        super().__init__(api_key=api_key, **server)
        self.session, self.engine, self.core = session, engine, core

    def apply_control(self, changes: dict) -> None:
        super().apply_control(changes)
        self.engine = changes.get("engine", self.engine)

    def api_key_of(self, request: Request) -> str | None:
        return request.headers.get("X-Api-Key")

    def unauthorized(self) -> Response:
        return _error(401, "Unauthorized")

    def handle(self, request: Request, body: Any) -> Response:
        body = body if isinstance(body, dict) else {}
        if request.method == "GET" and request.path.startswith("/api/sessions/"):
            return self._session_info(request.path.rpartition("/")[2])
        if request.method == "GET" and request.path == "/api/contacts/check-exists":
            return self._check_exists(request.args.get("session", ""), request.args.get("phone", ""))
        if request.method == "POST" and request.path in ("/api/startTyping", "/api/stopTyping"):
            return self._session_problem(body.get("session")) or Response("", status=201)
        if request.method == "POST" and request.path == "/api/sendText":
            response = self._send_text(body)
            return self.answer_after_send(request, response) if response.status_code < 300 else response
        parts = request.path.split("/")
        if request.method == "GET" and len(parts) == 6 and parts[1] == "api" and parts[3] == "chats" \
                and parts[5] == "messages":
            return self._chat_messages(parts[2], parts[4], request.args.get("limit", ""))
        return _error(404, f"Cannot {request.method} {request.path}")

    def _session_info(self, name: str) -> Response:
        if name != self.session:
            return _error(404, "Session not found")
        status = self.controls.state
        me = {"id": OWN_CHAT_ID, "pushName": "Cobranca"} if status == STATE_WORKING else None
        return json_response({"name": name, "status": status, "config": None, "me": me,
                              "engine": {"engine": self.engine}})

    def _session_problem(self, name: Any) -> Response | None:
        """The answer for a call on a session that cannot serve it, else None."""
        if name != self.session:
            return _error(422, CORE_ONLY_DEFAULT) if self.core else _not_found(str(name))
        status = self.controls.state
        if status == STATE_STOPPED:
            return _not_found(self.session)
        if status != STATE_WORKING:
            return json_response(
                {"error": "Session status is not as expected. Try again later or restart the session",
                 "session": self.session, "status": status, "expected": [STATE_WORKING]},
                status=422,
            )
        return None

    def _check_exists(self, session: str, phone: str) -> Response:
        problem = self._session_problem(session)
        if problem is not None:
            return problem
        exists, registered = self.lookup(phone)
        if not exists:
            return json_response({"numberExists": False})
        return json_response({"numberExists": True, "chatId": f"{registered}@{CHAT_DOMAIN}"})

    def _send_text(self, body: dict) -> Response:
        problem = self._session_problem(body.get("session"))
        if problem is not None:
            return problem
        failure = self.injected_failure()
        if failure is not None and failure >= HTTP_SERVER_ERROR:
            return _engine_error("/api/sendText", INJECTED_FAILURE)
        if failure is not None:
            return _error(failure, [INJECTED_FAILURE])
        chat_id, text = str(body.get("chatId", "")), str(body.get("text", ""))
        key_id = secrets.token_hex(MESSAGE_ID_HEX_BYTES).upper()
        serialized = f"true_{chat_id}_{key_id}"
        self.record_message(SentMessage(chat_id, text, serialized, self.reaches(chat_id.partition("@")[0])))
        return json_response(self._send_answer(chat_id=chat_id, text=text, key_id=key_id), status=201)

    def _chat_messages(self, session: str, chat_id: str, limit: str) -> Response:
        """``GET /api/{session}/chats/{chatId}/messages``: the chat's latest messages, newest first."""
        problem = self._session_problem(session)
        if problem is not None:
            return problem
        if not self.controls.message_store:
            return _error(400, STORE_DISABLED)
        count = int(limit) if limit.isdigit() else DEFAULT_MESSAGES_LIMIT
        listed = [
            {"id": m.id, "timestamp": int(m.timestamp), "from": OWN_CHAT_ID, "fromMe": True, "to": m.chat_id,
             "body": m.text, "hasMedia": False, "ack": 1, "ackName": "SERVER"}
            for m in self.sent_to(chat_id)[:count]
        ]
        return json_response(listed)

    def _send_answer(self, *, chat_id: str, text: str, key_id: str) -> dict:
        if self.engine == ENGINE_EMPTY:
            return {}
        if self.engine == ENGINE_WEBJS:
            return {"id": {"fromMe": True, "remote": chat_id, "id": key_id, "_serialized": f"true_{chat_id}_{key_id}"},
                    "body": text, "type": "chat", "timestamp": int(time.time()), "from": OWN_CHAT_ID, "to": chat_id,
                    "ack": 0, "hasMedia": False}
        remote_jid = f"{chat_id.partition('@')[0]}@s.whatsapp.net"
        return {"key": {"remoteJid": remote_jid, "fromMe": True, "id": key_id},
                "message": {"extendedTextMessage": {"text": text}},
                "messageTimestamp": str(int(time.time())), "status": "PENDING"}

    # webhooks
    def post_ack(self, url: str, *, message_id: str, ack: int = 2, secret: str | None = None) -> requests.Response:
        """POST a ``message.ack`` for one of the messages this fake accepted
        (unsigned with Core's envelope unless ``secret`` is given)."""
        chat_id = next((m.chat_id for m in self.messages if m.id == message_id), "")
        body = ack_body(session=self.session, message_id=message_id, ack=ack, chat_id=chat_id, core=secret is None)
        return post_webhook(url, body, secret=secret)

    def post_inbound(
        self, url: str, *, phone: str, text: str, lid: str = "", secret: str | None = None
    ) -> requests.Response:
        """POST a ``message`` from ``phone`` (or from ``<lid>@lid``, phone in ``_data.key.senderPn``)."""
        phone_jid = f"{digits(phone)}@{CHAT_DOMAIN}"
        body = message_body(session=self.session, text=text, from_chat=f"{lid}@lid" if lid else phone_jid,
                            alt_jid=f"{digits(phone)}@s.whatsapp.net" if lid else "", core=secret is None)
        return post_webhook(url, body, secret=secret)

    def post_session_status(self, url: str, *, status: str, secret: str | None = None) -> requests.Response:
        """POST a ``session.status`` (``WORKING``, ``STARTING``, ``SCAN_QR_CODE``, ``STOPPED``, ``FAILED``)."""
        body = session_status_body(session=self.session, status=status, core=secret is None)
        return post_webhook(url, body, secret=secret)


def _envelope(*, event: str, session: str, payload: dict, core: bool = False) -> dict:
    """A webhook envelope: Plus's (with ``id`` and ``timestamp``), or with
    ``core`` the one Core 2024.10.8 sends (neither; ``me`` null until paired)."""
    if core:
        me = None if event == "session.status" else {"id": OWN_CHAT_ID, "pushName": "Cobranca"}
        return {"event": event, "session": session, "me": me, "payload": payload, "engine": ENGINE_NOWEB,
                "environment": dict(CORE_ENVIRONMENT)}
    return {
        "id": f"evt_{secrets.token_hex(13)}", "timestamp": int(time.time() * MS_PER_SECOND), "event": event,
        "session": session, "metadata": {}, "me": {"id": OWN_CHAT_ID, "pushName": "Cobranca"},
        "payload": payload, "engine": ENGINE_NOWEB,
        "environment": {"version": "2024.10.8", "engine": ENGINE_NOWEB, "tier": "CORE", "browser": None},
    }


def message_body(
    *, session: str, from_chat: str, text: str, message_id: str = "", from_me: bool = False, alt_jid: str = "",
    event: str = "message", core: bool = False,
) -> dict:
    """A ``message`` (or ``message.any``) webhook body.

    Parameters:
      session: the session name.
      from_chat: the sender (``...@c.us``, ``...@lid``, ``...@g.us``).
      text: the message ``body``.
      message_id: the payload id (``false_<chat>_<hex>`` when empty).
      from_me: True for our own messages (``message.any`` reports them).
      alt_jid: the phone JID of an ``@lid`` sender, in ``_data.key.senderPn`` (NOWEB).
      event: ``message`` or ``message.any``.
      core: Core 2024.10.8's envelope (no id, no timestamp).
    """
    key_id = secrets.token_hex(MESSAGE_ID_HEX_BYTES).upper()
    key = {"remoteJid": from_chat, "fromMe": from_me, "id": key_id}
    if alt_jid:
        key["senderPn"] = alt_jid
    payload = {
        "id": message_id or f"{str(from_me).lower()}_{from_chat}_{key_id}", "timestamp": int(time.time()),
        "from": from_chat, "fromMe": from_me, "to": OWN_CHAT_ID, "body": text, "hasMedia": False,
        "ack": 1, "ackName": "SERVER", "_data": {"key": key, "message": {"conversation": text}},
    }
    return _envelope(event=event, session=session, payload=payload, core=core)


def ack_body(*, session: str, message_id: str, ack: Any, chat_id: str = "", from_me: bool = True,
             ack_name: str | None = None, core: bool = False) -> dict:
    """A ``message.ack`` webhook body (``ackName`` from ``ack`` unless given;
    ``core``: Core 2024.10.8's envelope)."""
    name = ack_name if ack_name is not None else ACK_NAMES.get(ack, "")
    payload = {"id": message_id, "from": chat_id, "fromMe": from_me, "to": chat_id, "ack": ack, "ackName": name}
    return _envelope(event="message.ack", session=session, payload=payload, core=core)


def session_status_body(*, session: str, status: str, core: bool = False) -> dict:
    """A ``session.status`` webhook body (``core``: Core 2024.10.8's envelope)."""
    return _envelope(event="session.status", session=session, payload={"name": session, "status": status},
                     core=core)


def signature_headers(raw: bytes, *, secret: str, request_id: str, timestamp_ms: int) -> dict:
    """The headers WAHA signs a webhook with (HMAC-SHA512 of the raw body, hex)."""
    return {
        "X-Webhook-Request-Id": request_id,
        "X-Webhook-Timestamp": str(timestamp_ms),
        "X-Webhook-Hmac": hmac.new(secret.encode(), raw, hashlib.sha512).hexdigest(),
        "X-Webhook-Hmac-Algorithm": "sha512",
    }


def post_webhook(url: str, body: dict, *, secret: str | None = None, headers: dict | None = None) -> requests.Response:
    """POST a WAHA webhook, signed when ``secret`` is given.

    Parameters:
      url: the endpoint.
      body: the envelope (see the ``*_body`` builders).
      secret: the HMAC key configured on the WAHA webhook; None sends no signature.
      headers: extra headers.
    """
    if secret is None:
        return post_json(url, body, headers=headers)
    raw = json.dumps(body).encode()  # the signature covers exactly the bytes sent
    signed = signature_headers(raw, secret=secret, request_id=str(body.get("id", "")),
                               timestamp_ms=int(body.get("timestamp", time.time() * MS_PER_SECOND)))
    return post_raw(url, raw, headers={**signed, **(headers or {})})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--session", default="default")
    parser.add_argument("--engine", choices=(ENGINE_NOWEB, ENGINE_WEBJS, ENGINE_EMPTY), default=ENGINE_NOWEB)
    serve_from_command_line(
        lambda args: FakeWaha(api_key=args.api_key, session=args.session, engine=args.engine,
                              host=args.host, port=args.port),
        parser,
    )


if __name__ == "__main__":
    main()
