"""The ``evolution`` gateway: Evolution API v2 (and the v1.8 send body).

Shapes follow Evolution 2.3.6's real answers (see PROVIDERS.md). Decisions:

* an unknown instance (404) is a configuration problem of the whole instance,
  so it is transient and ``instance_down``: queues pause instead of failing
  every contact permanently;
* "Connection Closed" (500 on sends, a 400 Boom on number checks) and the
  never-started instance's ``onWhatsApp`` 500 mean the instance is down;
* :meth:`EvolutionGateway.connection_state` never raises: a gateway it cannot
  ask is reported ``DOWN``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping
from urllib.parse import quote

from billing.providers.base import (
    ACK_DELIVERED, ACK_FAILED, ACK_READ, ACK_SENT, CONNECTED, CONNECTING, DOWN,
    AckEvent, ConnectionEvent, GatewayError, InboundMessage, NumberCheck, SendResult, WebhookEvent,
)
from billing.providers.http import (
    DEFAULT_TIMEOUT_SECONDS, HTTP_BAD_REQUEST, HTTP_NOT_FOUND, HTTP_UNAUTHORIZED, MS_PER_SECOND,
    GatewayClient, Reply, dig, digits_of, flatten_message, is_personal_chat, jid_parts, number_option,
    options_of, phone_from_jid, shorten, status_error, text_of,
)

PROVIDER = "evolution"

#: Instance options read by this adapter.
OPTION_TYPING_MS = "typing_ms"
OPTION_TIMEOUT = "timeout_seconds"
OPTION_BODY = "evolution_body"
#: ``evolution_body`` value selecting the v1.8 send body (anything else: v2).
BODY_V1 = "v1"

#: "typing..." shown before each message (ms); Evolution holds the call this long.
DEFAULT_TYPING_MS = 1200
#: v1.8's presence shown during the delay.
PRESENCE_TYPING = "composing"

#: JID domain Evolution uses for phone numbers.
PHONE_JID_DOMAIN = "s.whatsapp.net"
#: Error texts meaning the instance (not the message) is the problem.
INSTANCE_DOWN_MARKERS = ("Connection Closed", "reading 'onWhatsApp'")
#: 404 text of an instance name the gateway does not know.
UNKNOWN_INSTANCE_MARKER = "does not exist"

#: Evolution connection states -> ours (``refused``: WhatsApp refused the login).
STATES = {"open": CONNECTED, "connecting": CONNECTING, "close": DOWN, "refused": DOWN}
#: messages.update statuses -> ack states. Baileys' numeric codes index
#: ACK_NAMES (0 ERROR ... 5 PLAYED), which some versions send instead.
ACK_STATES = {
    "ERROR": ACK_FAILED, "PENDING": ACK_SENT, "SERVER_ACK": ACK_SENT,
    "DELIVERY_ACK": ACK_DELIVERED, "READ": ACK_READ, "PLAYED": ACK_READ,
}
ACK_NAMES = ("ERROR", "PENDING", "SERVER_ACK", "DELIVERY_ACK", "READ", "PLAYED")
#: Where a message's text may be, in order (plain, with link preview, captions).
TEXT_PATHS = (
    ("conversation",), ("extendedTextMessage", "text"), ("imageMessage", "caption"),
    ("videoMessage", "caption"), ("documentMessage", "caption"),
)
#: Where the phone JID of an ``@lid`` sender may be (Evolution versions differ).
LID_PHONE_PATHS = (("key", "remoteJidAlt"), ("key", "senderPn"), ("senderPn",))


class EvolutionGateway:
    """Talks to one Evolution API instance.

    Parameters:
      instance: has ``name`` (the Evolution instance), ``url``, ``token`` (sent
        as ``apikey``) and ``options`` (``typing_ms``, ``timeout_seconds``,
        ``evolution_body``).
    """

    def __init__(self, instance: Any) -> None:
        options = options_of(instance)
        self.name = quote(str(instance.name), safe="")
        self.typing_ms = int(number_option(options, OPTION_TYPING_MS, default=DEFAULT_TYPING_MS))
        self.body_version = str(options.get(OPTION_BODY, "")).lower()
        self.client = GatewayClient(
            provider=PROVIDER,
            base_url=instance.url,
            headers={"apikey": instance.token},
            timeout_seconds=number_option(options, OPTION_TIMEOUT, default=DEFAULT_TIMEOUT_SECONDS),
        )

    def send_text(self, *, phone: str, chat_id: str, text: str, contact_id: int | None = None) -> SendResult:
        """Send ``text``; the answer's ``key.remoteJid`` is the JID WhatsApp resolved.

        Parameters:
          phone: E.164, used when no chat id is known yet.
          chat_id: the JID a number check returned ("" if none).
          text: the message.
          contact_id: unused (the gateway has no use for it).
        """
        number = _number_for(phone=phone, chat_id=chat_id)
        if self.body_version == BODY_V1:
            body: dict = {
                "number": number,
                "options": {"delay": self.typing_ms, "presence": PRESENCE_TYPING},
                "textMessage": {"text": text},
            }
        else:
            body = {"number": number, "text": text, "delay": self.typing_ms, "linkPreview": False}
        # Evolution holds the answer for the typing delay: wait that long on top.
        reply = self.client.call(
            "POST", f"/message/sendText/{self.name}", json_body=body, extra_seconds=self.typing_ms / MS_PER_SECOND
        )
        if not reply.ok:
            raise _error(reply)
        resolved = text_of(dig(reply.body, "key", "remoteJid"))
        return SendResult(
            provider_message_id=text_of(dig(reply.body, "key", "id")),
            chat_id=resolved or chat_id or f"{number}@{PHONE_JID_DOMAIN}",
        )

    def connection_state(self) -> str:
        """``CONNECTED``, ``CONNECTING`` or ``DOWN`` (also when the gateway cannot be asked)."""
        try:
            reply = self.client.call("GET", f"/instance/connectionState/{self.name}")
        except GatewayError:
            return DOWN
        if not reply.ok:
            return DOWN
        return STATES.get(text_of(dig(reply.body, "instance", "state")), DOWN)

    def check_number(self, phone: str) -> NumberCheck:
        """Ask whether ``phone`` is on WhatsApp and which JID it has.

        Parameters:
          phone: E.164 (``+55...``) or digits.
        """
        digits = digits_of(phone)
        reply = self.client.call("POST", f"/chat/whatsappNumbers/{self.name}", json_body={"numbers": [digits]})
        if not reply.ok:
            raise _error(reply)
        if not isinstance(reply.body, list):
            raise GatewayError(f"{PROVIDER} {reply.status}: unexpected number check answer", transient=True)
        entries = [entry for entry in reply.body if isinstance(entry, Mapping)]
        # The answer echoes the number asked; fall back to the only entry.
        entry = next((e for e in entries if digits_of(text_of(e.get("number"))) == digits), None)
        entry = entry or (entries[0] if len(entries) == 1 else None)
        if entry is None or entry.get("exists") is not True:
            return NumberCheck(exists=False)
        return NumberCheck(exists=True, chat_id=text_of(entry.get("jid")))

    def parse_webhook(self, body: Mapping) -> list[WebhookEvent]:
        """The events of one webhook body; unknown events and malformed bodies give [].

        Parameters:
          body: the parsed JSON envelope ``{"event", "instance", "data", ...}``.
        """
        if not isinstance(body, Mapping) or not isinstance(body.get("event"), str):
            return []
        # Event names arrive as "messages.upsert" or "MESSAGES_UPSERT" depending on config.
        parser = _PARSERS.get(body["event"].lower().replace("_", "."))
        data = body.get("data")
        if parser is None:
            return []
        items = data if isinstance(data, list) else [data]
        events = (parser(item) for item in items if isinstance(item, Mapping))
        return [event for event in events if event is not None]


def _number_for(*, phone: str, chat_id: str) -> str:
    """The ``number`` field: digits of a phone JID, other JIDs (``@lid``) whole."""
    if not chat_id:
        return digits_of(phone)
    user, domain = jid_parts(chat_id)
    return user if domain in ("", PHONE_JID_DOMAIN, "c.us") else chat_id


def _message_of(reply: Reply) -> str:
    """The error text, wherever this Evolution answer put it."""
    for path in (("response", "message"), ("message",), ("output", "payload", "message")):
        message = flatten_message(dig(reply.body, *path))
        if message:
            return message
    return shorten(" ".join(reply.text.split()))


def _error(reply: Reply) -> GatewayError:
    status = reply.status
    message = shorten(_message_of(reply))
    if status == HTTP_UNAUTHORIZED:
        return status_error(provider=PROVIDER, reply=reply, message=message)
    listed = dig(reply.body, "response", "message")
    if isinstance(listed, list) and any(isinstance(e, Mapping) and e.get("exists") is False for e in listed):
        return GatewayError(f"{PROVIDER} {status}: number is not on WhatsApp", transient=False)
    if any(marker in message for marker in INSTANCE_DOWN_MARKERS):
        return GatewayError(f"{PROVIDER} {status}: {message}", transient=True, instance_down=True)
    if status == HTTP_NOT_FOUND:
        # Unknown instance or wrong base URL: the instance's configuration, not the contact.
        return GatewayError(f"{PROVIDER} {status}: {message}", transient=True, instance_down=True)
    if status == HTTP_BAD_REQUEST and reply.body == {}:
        # A number check on an instance never started answers 400 {} (2.3.6).
        return GatewayError(
            f"{PROVIDER} {status}: empty error (instance not started?)", transient=True, instance_down=True
        )
    return status_error(provider=PROVIDER, reply=reply, message=message)


def _inbound(data: Mapping) -> WebhookEvent | None:
    key = data.get("key")
    if not isinstance(key, Mapping) or key.get("fromMe") is not False:
        return None  # our own messages echo back as upserts with fromMe true
    chat_id, message_id = text_of(key.get("remoteJid")), text_of(key.get("id"))
    if not message_id or not is_personal_chat(chat_id):
        return None
    message = data.get("message")
    text = next((t for t in (text_of(dig(message, *p)) for p in TEXT_PATHS) if t), "")
    phone = phone_from_jid(chat_id)
    if jid_parts(chat_id)[1] == "lid":
        alternates = (phone_from_jid(text_of(dig(data, *path))) for path in LID_PHONE_PATHS)
        phone = next((alt for alt in alternates if alt), "")
    return InboundMessage(provider_message_id=message_id, chat_id=chat_id, phone=phone, text=text)


def _ack(data: Mapping) -> WebhookEvent | None:
    if data.get("fromMe") is False:
        return None  # a status change of a message the customer sent
    message_id = text_of(data.get("keyId")) or text_of(dig(data, "key", "id"))
    status = data.get("status")
    if isinstance(status, int) and not isinstance(status, bool) and 0 <= status < len(ACK_NAMES):
        status = ACK_NAMES[status]
    state = ACK_STATES.get(text_of(status).upper())
    if not message_id or state is None:
        return None
    return AckEvent(provider_message_id=message_id, status=state)


def _connection(data: Mapping) -> WebhookEvent | None:
    state = STATES.get(text_of(data.get("state")))
    return ConnectionEvent(state=state) if state else None


_PARSERS: dict[str, Callable[[Mapping], WebhookEvent | None]] = {
    "messages.upsert": _inbound,
    "messages.update": _ack,
    "connection.update": _connection,
}
