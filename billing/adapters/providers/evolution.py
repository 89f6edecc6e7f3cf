"""The ``evolution`` gateway: Evolution API v2 (and the v1.8 send body).

Shapes follow Evolution 2.3.6's real answers (see PROVIDERS.md). Decisions:

* failures that would hit every contact alike are the instance's
  (transient and ``instance_down``, with a reason an operator can act on):
  an unknown instance (404), a wrong or rotated key (401 on every call), a
  request shape the server rejects for every message (400 ``instance
  requires property "text"``: the v1.8 body on a v2 server);
* "Connection Closed" (500 on sends, a 400 Boom on number checks) and the
  never-started instance's ``onWhatsApp`` 500 mean the instance is down;
* ``remove.instance``, ``instance.delete`` and ``logout.instance`` webhooks
  take the instance down at once; ``close`` and ``connecting`` share one
  reason, because a never-paired instance flips between them many times a
  second and each new reason would be a write and a log line;
* :meth:`EvolutionGateway.connection_state` never raises: a gateway it cannot
  ask is reported ``DOWN`` (:meth:`~EvolutionGateway.connection_status` says why);
* :meth:`EvolutionGateway.find_sent` reads the gateway's message store
  (``POST /chat/findMessages``); an empty history means the store may be
  off, so it cannot tell.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal, Optional, Union
from urllib.parse import quote

from pydantic import Field

from billing.adapters.providers.base import (
    ACK_DELIVERED,
    ACK_FAILED,
    ACK_READ,
    ACK_SENT,
    CONNECTED,
    CONNECTING,
    DOWN,
    AckEvent,
    ConnectionEvent,
    ConnectionStatus,
    Gateway,
    GatewayError,
    InboundMessage,
    LookupUnavailable,
    NumberCheck,
    SendResult,
    WebhookEvent,
)
from billing.adapters.providers.http import (
    CLOCK_SKEW_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    DEFAULT_TYPING_MS,
    HTTP_BAD_REQUEST,
    HTTP_NOT_FOUND,
    HTTP_UNAUTHORIZED,
    MAX_GATEWAY_MESSAGE_LENGTH,
    MS_PER_SECOND,
    OPTION_TIMEOUT,
    OPTION_TYPING,
    OPTION_TYPING_MS,
    GatewayClient,
    HttpGatewayOptions,
    Reply,
    bool_option,
    dig,
    digits_of,
    epoch_seconds,
    gateway_message,
    is_personal_chat,
    jid_parts,
    naive_utc_epoch,
    number_option,
    options_of,
    phone_from_jid,
    shorten,
    status_error,
    text_of,
)
from billing.adapters.providers.registry import Provider, Webhook, WebhookBody, WebhookDoc

NAME = "evolution"

#: The instance option choosing the send body (``typing``, ``typing_ms`` and
#: ``timeout_seconds`` are every HTTP gateway's: see :class:`EvolutionOptions`).
OPTION_BODY = "evolution_body"
#: ``evolution_body`` values: the v1.8 send body, or v2's (the default).
BODY_V1 = "v1"
BODY_V2 = "v2"

#: v1.8's presence shown during the delay.
PRESENCE_TYPING = "composing"

#: JID domain Evolution uses for phone numbers.
PHONE_JID_DOMAIN = "s.whatsapp.net"
#: Error texts meaning the instance (not the message) is the problem.
INSTANCE_DOWN_MARKERS = ("Connection Closed", "reading 'onWhatsApp'")
#: 404 text of an instance name the gateway does not know.
UNKNOWN_INSTANCE_MARKER = "does not exist"
#: 400 validation text of a v2 server given the v1.8 body: the request shape
#: is rejected for every message (we always send ``text`` in the v2 body).
REJECTED_SHAPE_MARKER = "instance requires property"
#: 500 of a v1.8 server given the v2 body (no ``textMessage.text``).
V1_SERVER_MARKER = "reading 'text'"
#: What the operator should check when the server rejects our body's shape.
BODY_SHAPE_HINT = "the server rejects this request shape for every message: check the instance's evolution_body option"

#: How many of the chat's most recent outgoing messages find_sent reads.
FIND_SENT_PAGE_SIZE = 50
#: Events that mean the instance no longer exists (or lost its WhatsApp login) on the gateway.
GONE_EVENTS = {
    "remove.instance": "was removed from the gateway",
    "instance.delete": "was deleted on the gateway",
    "logout.instance": "was logged out of WhatsApp",
}

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


class EvolutionGateway(Gateway):
    """Talks to one Evolution API instance.

    Parameters:
      instance: has ``name`` (the Evolution instance), ``url``, ``token`` (sent
        as ``apikey``) and ``options`` (:class:`EvolutionOptions`).
    """

    def __init__(self, instance: Any) -> None:
        options = options_of(instance)
        #: The instance's name on the gateway (webhooks name it in ``instance``).
        self.remote_name = str(instance.name)
        self.name = quote(self.remote_name, safe="")
        # Evolution shows "typing..." for the send's delay: no typing is no delay.
        typing = bool_option(options, OPTION_TYPING, default=True)
        self.typing_ms = int(number_option(options, OPTION_TYPING_MS, default=DEFAULT_TYPING_MS)) if typing else 0
        self.body_version = str(options.get(OPTION_BODY, "")).lower()
        self.client = GatewayClient(
            provider=NAME,
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

    def connection_status(self) -> ConnectionStatus:
        """The instance's state and, when not connected, why.

        Raises:
          GatewayError: the gateway could not be asked, or refused to say
            (401 wrong key, 404 unknown instance), with the reason.
        """
        reply = self.client.call("GET", f"/instance/connectionState/{self.name}")
        if not reply.ok:
            raise _error(reply)
        raw = text_of(dig(reply.body, "instance", "state"))
        if not raw:
            # Answered right after DELETE /instance/delete, before the 404s start.
            return ConnectionStatus(DOWN, f"{NAME}: the gateway reports no state for instance "
                                          f"'{self.remote_name}' (being deleted?)")
        state = STATES.get(raw, DOWN)
        return ConnectionStatus(state, _state_reason(self.remote_name, raw))

    def find_sent(self, *, chat_id: str, text: str, since: datetime) -> SendResult | None:
        """The message with exactly ``text`` we sent to ``chat_id`` at or after
        ``since``, from the gateway's message store (``POST /chat/findMessages``).

        Parameters:
          chat_id: the JID the message was addressed to (or E.164 digits).
          text: the message text, exactly as sent.
          since: naive UTC; when the ambiguous attempt started.

        Returns:
          The message's id and chat, or None when the chat's recent history
          (which the store keeps) does not show it.

        Raises:
          LookupUnavailable: the gateway could not be asked, answered an
            error or a shape we cannot read, or keeps no history for the chat
            (its message store may be off, so "not there" would prove nothing).
        """
        jid = _jid_for(chat_id)
        body = {"where": {"key": {"remoteJid": jid, "fromMe": True}}, "page": 1, "offset": FIND_SENT_PAGE_SIZE}
        try:
            reply = self.client.call("POST", f"/chat/findMessages/{self.name}", json_body=body)
        except GatewayError as exc:
            raise LookupUnavailable(exc.reason) from exc
        if not reply.ok:
            raise LookupUnavailable(_error(reply).reason)
        records = _records_of(reply.body)
        if records is None:
            raise LookupUnavailable(f"{NAME} {reply.status}: unexpected findMessages answer")
        if not records:
            raise LookupUnavailable(f"{NAME}: no stored messages for {jid} (is the gateway's message store on?)")
        earliest = naive_utc_epoch(since) - CLOCK_SKEW_SECONDS
        for record in records:
            key = record.get("key")
            if not isinstance(key, Mapping) or key.get("fromMe") is not True:
                continue
            sent_at = epoch_seconds(record.get("messageTimestamp"))
            if sent_at is None or sent_at < earliest or _text_of_message(record.get("message")) != text:
                continue
            message_id = text_of(key.get("id"))
            if message_id:
                return SendResult(provider_message_id=message_id, chat_id=text_of(key.get("remoteJid")) or jid)
        return None

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
            raise GatewayError(f"{NAME} {reply.status}: unexpected number check answer", transient=True)
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
        event = body["event"].lower().replace("_", ".")
        gone = GONE_EVENTS.get(event)
        if gone is not None:
            # remove.instance carries data null: the event itself is the news.
            return [ConnectionEvent(state=DOWN, reason=f"{NAME}: instance '{self.remote_name}' {gone} ({event})")]
        if event == "connection.update":
            return self._connection_events(body.get("data"))
        parser = _PARSERS.get(event)
        data = body.get("data")
        if parser is None:
            return []
        items = data if isinstance(data, list) else [data]
        events = (parser(item) for item in items if isinstance(item, Mapping))
        return [event for event in events if event is not None]

    def foreign_source(self, body: Mapping) -> str:
        """The instance name a webhook body gives when it is not this
        instance's ("" when it names this one, or none).

        Parameters:
          body: the parsed JSON envelope (``instance`` names the sender).
        """
        named = text_of(body.get("instance")) if isinstance(body, Mapping) else ""
        return named if named and named != self.remote_name else ""

    def _connection_events(self, data: Any) -> list[WebhookEvent]:
        if not isinstance(data, Mapping):
            return []
        raw = text_of(data.get("state"))
        state = STATES.get(raw)
        return [ConnectionEvent(state=state, reason=_state_reason(self.remote_name, raw))] if state else []


def _state_reason(name: str, raw: str) -> str:
    """Why an instance in Evolution state ``raw`` cannot send ("" when open).
    ``close`` and ``connecting`` share one text: see the module docstring."""
    if raw == "open":
        return ""
    if raw == "refused":
        return f"{NAME}: WhatsApp refused to pair instance '{name}' (QR code limit reached: connect it again)"
    return f"{NAME}: instance '{name}' is not connected to WhatsApp (connect it and scan its QR code)"


def _jid_for(chat_id: str) -> str:
    """A phone JID for findMessages: bare digits or a WAHA ``@c.us`` id become ``@s.whatsapp.net``."""
    user, domain = jid_parts(chat_id)
    if domain in ("", "c.us"):
        return f"{digits_of(user)}@{PHONE_JID_DOMAIN}"
    return chat_id


def _records_of(body: Any) -> list[Mapping] | None:
    """The message records of a findMessages answer: v2 ``{"messages":
    {"records": [...]}}``, or v1.8's plain list; None when it is neither."""
    records = dig(body, "messages", "records")
    if records is None and isinstance(body, list):
        records = body
    if not isinstance(records, list):
        return None
    return [record for record in records if isinstance(record, Mapping)]


def _text_of_message(message: Any) -> str:
    """The text of a stored message (plain, with link preview, captions)."""
    return next((t for t in (text_of(dig(message, *path)) for path in TEXT_PATHS) if t), "")


def _number_for(*, phone: str, chat_id: str) -> str:
    """The ``number`` field: digits of a phone JID, other JIDs (``@lid``) whole."""
    if not chat_id:
        return digits_of(phone)
    user, domain = jid_parts(chat_id)
    return user if domain in ("", PHONE_JID_DOMAIN, "c.us") else chat_id


#: The reason of a 404 without a message field (a wrong base URL answers another server's page).
NOT_FOUND_MESSAGE = "not found (unknown instance, or a wrong base URL)"
#: Where this gateway's error answers put their text, in order.
_ERROR_MESSAGE_PATHS = (("response", "message"), ("message",), ("output", "payload", "message"))


def _error(reply: Reply) -> GatewayError:
    status = reply.status
    # Markers are looked for in the whole message field; reasons quote it cut short.
    whole = gateway_message(reply, _ERROR_MESSAGE_PATHS)
    message = shorten(whole, limit=MAX_GATEWAY_MESSAGE_LENGTH)
    if status == HTTP_UNAUTHORIZED:
        return status_error(provider=NAME, reply=reply, message=message)
    listed = dig(reply.body, "response", "message")
    if isinstance(listed, list) and any(isinstance(e, Mapping) and e.get("exists") is False for e in listed):
        return GatewayError(f"{NAME} {status}: number is not on WhatsApp", transient=False)
    if any(marker in whole for marker in INSTANCE_DOWN_MARKERS):
        return GatewayError(f"{NAME} {status}: {message}", transient=True, instance_down=True)
    if (status == HTTP_BAD_REQUEST and REJECTED_SHAPE_MARKER in whole) or V1_SERVER_MARKER in whole:
        return GatewayError(shorten(f"{NAME} {status}: {message} ({BODY_SHAPE_HINT})"),
                            transient=True, instance_down=True)
    if status == HTTP_NOT_FOUND:
        # Unknown instance or wrong base URL: the instance's configuration, not the contact.
        return GatewayError(f"{NAME} {status}: {message or NOT_FOUND_MESSAGE}", transient=True, instance_down=True)
    if status == HTTP_BAD_REQUEST and reply.body == {}:
        # A number check on an instance never started answers 400 {} (2.3.6).
        return GatewayError(
            f"{NAME} {status}: empty error (instance not started?)", transient=True, instance_down=True
        )
    return status_error(provider=NAME, reply=reply, message=message)


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


_PARSERS: dict[str, Callable[[Mapping], WebhookEvent | None]] = {
    "messages.upsert": _inbound,
    "messages.update": _ack,
}


# --- the declaration ---------------------------------------------------------------

class EvolutionOptions(HttpGatewayOptions):
    """An Evolution instance's options."""

    evolution_body: Literal[BODY_V1, BODY_V2] = Field(
        None, description="The send body: v2 (default, Evolution 2.x) or v1 (Evolution 1.8's textMessage body)."
    )


class EvolutionKey(WebhookBody):
    remoteJid: str = Field(None, description="The chat: <digits>@s.whatsapp.net for a person.")
    fromMe: bool = Field(None, description="True for the messages we sent.")
    id: str = Field(None, description="The message id.")


class EvolutionMessage(WebhookBody):
    conversation: str = Field(None, description="The text of a plain message.")


class EvolutionData(WebhookBody):
    key: EvolutionKey = Field(None, description="messages.upsert: which message.")
    message: EvolutionMessage = Field(None, description="messages.upsert: its content.")
    keyId: str = Field(None, description="messages.update: the message id.")
    fromMe: bool = Field(None, description="messages.update: whether we sent the message.")
    status: Union[str, int] = Field(
        None, description="messages.update: SERVER_ACK, DELIVERY_ACK, READ, PLAYED, ERROR (or their codes 0-5)."
    )
    state: str = Field(None, description="connection.update: open, connecting, close or refused.")


class EvolutionWebhook(WebhookBody):
    """The envelope Evolution API posts for each event."""

    event: Literal["messages.upsert", "messages.update", "connection.update", "remove.instance", "instance.delete",
                   "logout.instance", "MESSAGES_UPSERT", "MESSAGES_UPDATE", "CONNECTION_UPDATE", "REMOVE_INSTANCE",
                   "INSTANCE_DELETE", "LOGOUT_INSTANCE"] = Field(
        None, description="The event; remove.instance, instance.delete and logout.instance take the instance down "
        "at once; others are acknowledged and ignored."
    )
    instance: str = Field(
        None, description="The gateway's instance name: must be the name this URL's instance has (else 403)."
    )
    data: Optional[Union[EvolutionData, list[EvolutionData]]] = Field(
        None, description="The event's data (one or a list; null for remove.instance)."
    )


PROVIDER = Provider(
    name=NAME,
    label="Evolution API",
    adapter=EvolutionGateway,
    options=EvolutionOptions,
    webhook=Webhook(
        doc=WebhookDoc(
            summary="Evolution API events (acks, replies, connection)",
            description="Evolution cannot sign its webhooks: the instance's webhook secret is the last segment of "
            "the URL configured on the gateway (401 when it does not match). A body whose instance is not this "
            "URL's instance is refused with 403. remove.instance and instance.delete take the instance down at "
            "once. Handling is idempotent; a body that is not understood is acknowledged with events 0.",
        ),
        by_event=WebhookDoc(
            summary="Evolution API events, 'Webhook by Events' on",
            description="With 'Webhook by Events' on, Evolution appends the event's name to the configured URL "
            "(connection-update, messages-upsert, messages-update, ...). Handled exactly like the plain URL: the "
            "body's event decides, the secret segment authenticates (401), a body naming another instance is 403.",
        ),
        body=EvolutionWebhook,
        show=("webhook URL (Evolution instance webhook; 'Webhook by Events' on or off): {url}",),
    ),
)
