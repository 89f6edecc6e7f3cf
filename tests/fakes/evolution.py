"""A fake Evolution API 2.3.x (or v1.8 send body) server, and its webhook shapes.

Answers copy a real 2.3.6's (``/work/shared/gateways/evolution-2.3.6-answers.txt``):
a down instance answers sends with 500 "Connection Closed" and number checks
with a 400 Boom; an instance never started answers 500 "... (reading
'onWhatsApp')" and 400 ``{}``; an unknown instance 404; a wrong key 401 on
every call; the v1.8 body 400 ``[["instance requires property \"text\""]]``.
``POST /chat/findMessages/{instance}`` answers 2.3.x's shape (``{"messages":
{"total", "pages", "currentPage", "records"}}``, newest first) from the
messages the fake accepted; ``keep_messages(False)`` empties it, as a server
with message saving off does. ``hang_next`` / ``drop_next`` make a send go
out without its answer arriving.

Usage::

    with FakeEvolution(api_key="k", instance="billing") as fake:
        fake.disconnect()                      # state "close"
        fake.post_ack(webhook_url, message_id=fake.messages[0].id, status="READ")

Run standalone: ``python -m tests.fakes.evolution --port 8081 --api-key k``.
"""
from __future__ import annotations

import argparse
import secrets
import time
from typing import Any

import requests
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Request, Response

from tests.fakes import FakeGateway, SentMessage, digits, json_response, post_json, serve_from_command_line

#: The JID domain of phone numbers.
PHONE_DOMAIN = "s.whatsapp.net"
#: Real message ids start with this, then hex.
MESSAGE_ID_PREFIX = "3EB0"
MESSAGE_ID_HEX_BYTES = 8
#: Our own number, as webhooks' ``sender`` shows it.
OWN_JID = "5511900000000@s.whatsapp.net"

STATE_OPEN, STATE_CONNECTING, STATE_CLOSE, STATE_REFUSED = "open", "connecting", "close", "refused"
#: Created without a QR start: no WhatsApp socket at all (not a state Evolution reports).
STATE_UNSTARTED = "unstarted"
#: Send body versions the fake accepts (a mismatched body fails like the real one).
BODY_V2, BODY_V1 = "v2", "v1"

CONNECTION_CLOSED = "Connection Closed"
NOT_STARTED = "Cannot read properties of undefined (reading 'onWhatsApp')"
#: v1.8 answers a v2 body with this 500.
V1_MISSING_TEXT = "Cannot read properties of undefined (reading 'text')"
INJECTED_FAILURE = "Injected failure"
MS_PER_SECOND = 1000
#: findMessages' page size when the request gives none (Evolution's default).
FIND_PAGE_SIZE = 50
#: The instance's id on the gateway (a real 2.3.6's, from the answers file).
INSTANCE_ID = "fdd65680-2660-42dc-b74f-2291d012c523"


def _envelope(status: int, message: Any) -> Response:
    """Evolution's error envelope."""
    return json_response(
        {"status": status, "error": HTTP_STATUS_CODES.get(status, "Error"), "response": {"message": message}},
        status=status,
    )


def _boom(message: str) -> Response:
    """The 400 whatsappNumbers gives with a Baileys Boom inside (2.3.6)."""
    payload = {"statusCode": 428, "error": "Precondition Required", "message": message}
    boom = {"data": None, "isBoom": True, "isServer": False,
            "output": {"statusCode": 428, "payload": payload, "headers": {}}}
    return json_response(boom, status=400)


def new_message_id() -> str:
    return f"{MESSAGE_ID_PREFIX}{secrets.token_hex(MESSAGE_ID_HEX_BYTES).upper()}"


class FakeEvolution(FakeGateway):
    """A fake Evolution API with one instance.

    Parameters:
      api_key: when set, other ``apikey`` headers get 401.
      instance: the instance name it knows (others: 404 does not exist).
      body_version: ``v2`` (default) or ``v1``: which sendText body it accepts.
      resolve_jids: answer sends with the JID the account is keyed on (what a
        real Evolution does after its own onWhatsApp lookup), so a send to the
        9-form of a 9-less account arrives; False makes it go nowhere.
      host, port: where to listen (port 0: any free one).
    """

    connected_state = STATE_OPEN
    disconnected_state = STATE_CLOSE
    states = (STATE_OPEN, STATE_CONNECTING, STATE_CLOSE, STATE_REFUSED, STATE_UNSTARTED)

    def __init__(
        self, *, api_key: str | None = None, instance: str = "billing", body_version: str = BODY_V2,
        resolve_jids: bool = False, **server: Any,
    ) -> None:
        super().__init__(api_key=api_key, **server)
        self.instance, self.body_version, self.resolve_jids = instance, body_version, resolve_jids

    def apply_control(self, changes: dict) -> None:
        super().apply_control(changes)
        self.body_version = changes.get("body_version", self.body_version)
        self.resolve_jids = bool(changes.get("resolve_jids", self.resolve_jids))

    def api_key_of(self, request: Request) -> str | None:
        return request.headers.get("apikey")

    def unauthorized(self) -> Response:
        return _envelope(401, "Unauthorized")

    def handle(self, request: Request, body: Any) -> Response:
        route, _, name = request.path.rpartition("/")
        handler = {
            ("GET", "/instance/connectionState"): self._connection_state,
            ("POST", "/message/sendText"): self._send_text,
            ("POST", "/chat/whatsappNumbers"): self._whatsapp_numbers,
            ("POST", "/chat/findMessages"): self._find_messages,
        }.get((request.method, route))
        if handler is None:
            return _envelope(404, [f"Cannot {request.method} {request.path}"])
        if name != self.instance:
            return _envelope(404, [f'The "{name}" instance does not exist'])
        response = handler(body)
        return self.answer_after_send(request, response) if handler == self._send_text and response.status_code < 300 \
            else response

    def _connection_state(self, body: Any) -> Response:
        state = STATE_CLOSE if self.controls.state == STATE_UNSTARTED else self.controls.state
        return json_response({"instance": {"instanceName": self.instance, "state": state}})

    def _send_text(self, body: Any) -> Response:
        if not isinstance(body, dict):
            return _envelope(400, "Unexpected end of JSON input")
        if self.body_version == BODY_V1:
            text, delay_ms = (body.get("textMessage") or {}).get("text"), (body.get("options") or {}).get("delay", 0)
            if not isinstance(text, str):
                return _envelope(500, V1_MISSING_TEXT)
        else:
            missing = [f'instance requires property "{key}"' for key in ("number", "text") if key not in body]
            if missing:
                return _envelope(400, [missing])
            text, delay_ms = body["text"], body.get("delay", 0)
        if not text:
            return _envelope(400, ["Text is required"])
        state = self.controls.state
        if state != STATE_OPEN:
            return _envelope(500, NOT_STARTED if state == STATE_UNSTARTED else CONNECTION_CLOSED)
        failure = self.injected_failure()
        if failure is not None:
            return _envelope(failure, INJECTED_FAILURE)
        number = digits(str(body.get("number", "")).partition("@")[0])
        exists, registered = self.lookup(number)
        if not exists:
            return _envelope(400, [{"exists": False, "jid": f"{number}@{PHONE_DOMAIN}", "number": number}])
        # Evolution shows "typing..." for ``delay`` ms and answers after it.
        self._stopping.wait(float(delay_ms or 0) / MS_PER_SECOND)
        target = registered if self.resolve_jids else number
        message = SentMessage(f"{target}@{PHONE_DOMAIN}", text, new_message_id(), self.reaches(target))
        self.record_message(message)
        return json_response(
            {
                "key": {"remoteJid": message.chat_id, "fromMe": True, "id": message.id},
                "pushName": "", "status": "PENDING", "message": {"conversation": text},
                "messageType": "conversation", "messageTimestamp": int(time.time()),
                "instanceId": "fdd65680-2660-42dc-b74f-2291d012c523", "source": "unknown",
            },
            status=201,
        )

    def _find_messages(self, body: Any) -> Response:
        """Stored messages matching ``where.key`` (remoteJid, fromMe, id), newest first, one page."""
        query = body if isinstance(body, dict) else {}
        key = (query.get("where") or {}).get("key") or {}
        page_size = int(query.get("offset") or FIND_PAGE_SIZE)
        page = max(int(query.get("page") or 1), 1)
        stored = sorted(self.messages, key=lambda m: -m.timestamp) if self.controls.message_store else []
        matching = [
            m for m in stored
            if (not key.get("remoteJid") or m.chat_id == key["remoteJid"])
            and (not key.get("id") or m.id == key["id"]) and key.get("fromMe") in (None, True)
        ]
        records = [_record(message, instance=self.instance)
                   for message in matching[(page - 1) * page_size:page * page_size]]
        pages = -(-len(matching) // page_size)
        return json_response({"messages": {"total": len(matching), "pages": pages, "currentPage": page,
                                           "records": records}})

    def _whatsapp_numbers(self, body: Any) -> Response:
        numbers = body.get("numbers") if isinstance(body, dict) else None
        if numbers is None:
            return json_response({}, status=400)
        if not isinstance(numbers, list):
            return json_response(
                {"status": 400, "error": "Bad Request", "message": [["numbers is not of a type(s) array"]]}, status=400
            )
        if self.controls.state == STATE_UNSTARTED:
            return json_response({}, status=400)
        if self.controls.state != STATE_OPEN:
            return _boom(CONNECTION_CLOSED)
        answer = []
        for number in numbers:
            exists, registered = self.lookup(str(number))
            answer.append({"exists": exists, "jid": f"{registered}@{PHONE_DOMAIN}", "number": str(number)})
        return json_response(answer)

    # webhooks
    def post_ack(
        self, url: str, *, message_id: str, status: str = "DELIVERY_ACK", headers: dict | None = None
    ) -> requests.Response:
        """POST a ``messages.update`` for one of the messages this fake accepted."""
        chat_id = next((m.chat_id for m in self.messages if m.id == message_id), "")
        return post_json(url, update_body(instance=self.instance, key_id=message_id, status=status, remote_jid=chat_id),
                         headers=headers)

    def post_inbound(
        self, url: str, *, phone: str, text: str, lid: str = "", headers: dict | None = None
    ) -> requests.Response:
        """POST a ``messages.upsert`` from ``phone``; with ``lid`` the sender is ``<lid>@lid``
        and the phone JID travels in ``key.remoteJidAlt``."""
        phone_jid = f"{digits(phone)}@{PHONE_DOMAIN}"
        body = upsert_body(
            instance=self.instance, text=text,
            remote_jid=f"{lid}@lid" if lid else phone_jid, alt_jid=phone_jid if lid else "",
        )
        return post_json(url, body, headers=headers)

    def post_connection(self, url: str, *, state: str, headers: dict | None = None) -> requests.Response:
        """POST a ``connection.update`` (``open``, ``connecting``, ``close``, ``refused``)."""
        return post_json(url, connection_body(instance=self.instance, state=state), headers=headers)


def _record(message: SentMessage, *, instance: str) -> dict:
    """A stored message as findMessages lists it (Evolution 2.3.x)."""
    return {
        "id": f"cm{secrets.token_hex(12)}",
        "key": {"id": message.id, "fromMe": True, "remoteJid": message.chat_id},
        "pushName": "", "messageType": "conversation", "message": {"conversation": message.text},
        "messageTimestamp": int(message.timestamp), "instanceId": INSTANCE_ID, "source": "unknown",
        "contextInfo": None, "MessageUpdate": [{"status": "SERVER_ACK"}],
    }


def _envelope_of(*, event: str, instance: str, data: Any) -> dict:
    return {
        "event": event, "instance": instance, "data": data, "destination": "",
        "date_time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "sender": OWN_JID, "server_url": "http://127.0.0.1:8080", "apikey": "instance-token",
    }


def upsert_body(
    *, instance: str, remote_jid: str, text: str, message_id: str = "", from_me: bool = False,
    alt_jid: str = "", alt_field: str = "remoteJidAlt", extended: bool = False, event: str = "messages.upsert",
) -> dict:
    """A ``messages.upsert`` webhook body.

    Parameters:
      instance: the instance name.
      remote_jid: the chat (``...@s.whatsapp.net``, ``...@lid``, ``...@g.us``).
      text: the message text.
      message_id: the key id (a new one when empty).
      from_me: True for the echo of our own sends.
      alt_jid: the phone JID of an ``@lid`` sender, put in ``key.<alt_field>``
        (``remoteJidAlt`` or ``senderPn``; ``data.senderPn`` with alt_field "data.senderPn").
      extended: put the text in ``extendedTextMessage.text`` (with link preview).
      event: the event name (``MESSAGES_UPSERT`` with some configs).
    """
    key: dict = {"remoteJid": remote_jid, "fromMe": from_me, "id": message_id or new_message_id()}
    data: dict = {
        "key": key, "pushName": "Cliente", "status": "DELIVERY_ACK",
        "message": {"extendedTextMessage": {"text": text}} if extended else {"conversation": text},
        "messageType": "extendedTextMessage" if extended else "conversation",
        "messageTimestamp": int(time.time()), "instanceId": "fdd65680-2660-42dc-b74f-2291d012c523", "source": "android",
    }
    if alt_jid:
        if alt_field == "data.senderPn":
            data["senderPn"] = alt_jid
        else:
            key[alt_field] = alt_jid
        key["addressingMode"] = "lid"
    return _envelope_of(event=event, instance=instance, data=data)


def update_body(
    *, instance: str, key_id: str, status: Any, remote_jid: str = "", from_me: bool = True,
    event: str = "messages.update",
) -> dict:
    """A ``messages.update`` (ack) webhook body; ``status`` is ERROR, PENDING,
    SERVER_ACK, DELIVERY_ACK, READ or PLAYED (or anything, to test parsing)."""
    data = {
        "messageId": f"cm{secrets.token_hex(8)}", "keyId": key_id, "remoteJid": remote_jid, "fromMe": from_me,
        "participant": None, "status": status, "instanceId": "fdd65680-2660-42dc-b74f-2291d012c523",
    }
    return _envelope_of(event=event, instance=instance, data=data)


def removed_body(*, instance: str, event: str = "remove.instance") -> dict:
    """A ``remove.instance`` (data null) or ``instance.delete`` webhook body, as 2.3.6 sent them."""
    data = {"instanceName": instance, "instanceId": INSTANCE_ID} if event == "instance.delete" else None
    return _envelope_of(event=event, instance=instance, data=data)


def connection_body(*, instance: str, state: str, event: str = "connection.update") -> dict:
    """A ``connection.update`` webhook body."""
    data = {"instance": instance, "state": state, "statusReason": 200}
    return _envelope_of(event=event, instance=instance, data=data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instance", default="billing")
    parser.add_argument("--body-version", choices=(BODY_V2, BODY_V1), default=BODY_V2)
    parser.add_argument("--resolve-jids", action="store_true")
    serve_from_command_line(
        lambda args: FakeEvolution(
            api_key=args.api_key, instance=args.instance, body_version=args.body_version,
            resolve_jids=args.resolve_jids, host=args.host, port=args.port,
        ),
        parser,
    )


if __name__ == "__main__":
    main()
