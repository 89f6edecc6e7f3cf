"""The ``waha`` gateway: WAHA (WhatsApp HTTP API), any engine.

Shapes follow WAHA Core 2024.10.8's real answers (see PROVIDERS.md). Decisions:

* a session that is missing or STOPPED (404) or not WORKING yet (422) means
  the instance is down: transient and ``instance_down``, never a contact's
  permanent failure; so is Core's 422 for a session other than ``default``
  (a configuration problem of the whole instance);
* WAHA sends to numbers that are not on WhatsApp without error: callers must
  :meth:`WahaGateway.check_number` first;
* an ``@lid`` sender has no phone unless the NOWEB raw data (``_data.key``)
  carries ``senderPn`` / ``remoteJidAlt``;
* :meth:`WahaGateway.connection_state` never raises: a gateway it cannot ask
  is reported ``DOWN``.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any, Callable, Mapping
from urllib.parse import quote

from billing.providers.base import (
    ACK_DELIVERED, ACK_FAILED, ACK_READ, ACK_SENT, CONNECTED, CONNECTING, DOWN,
    AckEvent, ConnectionEvent, GatewayError, InboundMessage, NumberCheck, SendResult, WebhookEvent,
)
from billing.providers.http import (
    DEFAULT_TIMEOUT_SECONDS, HTTP_NOT_FOUND, HTTP_UNAUTHORIZED, HTTP_UNPROCESSABLE, MS_PER_SECOND,
    GatewayClient, Reply, bool_option, dig, digits_of, flatten_message, is_personal_chat, jid_parts,
    number_option, options_of, phone_from_jid, shorten, status_error, text_of,
)

PROVIDER = "waha"

#: Instance options read by this adapter.
OPTION_TYPING = "typing"
OPTION_TYPING_MS = "typing_ms"
OPTION_TIMEOUT = "timeout_seconds"
#: Overrides the session name (WAHA Core only has ``default``); else instance.name.
OPTION_SESSION = "session"

#: How long "typing..." shows before each message (ms).
DEFAULT_TYPING_MS = 1200
#: WAHA's chat id domain for phone numbers.
CHAT_DOMAIN = "c.us"

#: Webhook signature headers and the only algorithm WAHA uses.
SIGNATURE_HEADER = "x-webhook-hmac"
ALGORITHM_HEADER = "x-webhook-hmac-algorithm"
SIGNATURE_ALGORITHM = "sha512"

#: Texts of WAHA errors about the session, not the message.
SESSION_ERROR_MARKERS = ("Session status is not as expected", "only 'default' session")

#: Session statuses -> ours.
STATES = {"WORKING": CONNECTED, "STARTING": CONNECTING, "SCAN_QR_CODE": CONNECTING, "STOPPED": DOWN, "FAILED": DOWN}
#: ``ack`` codes (-1 ERROR, 0 PENDING, 1 SERVER, 2 DEVICE, 3 READ, 4 PLAYED) -> ours.
ACK_CODES = {-1: ACK_FAILED, 0: ACK_SENT, 1: ACK_SENT, 2: ACK_DELIVERED, 3: ACK_READ, 4: ACK_READ}
#: ``ackName`` words -> ours, for payloads without a usable code.
ACK_NAMES = {"ERROR": ACK_FAILED, "PENDING": ACK_SENT, "SERVER": ACK_SENT, "DEVICE": ACK_DELIVERED,
             "READ": ACK_READ, "PLAYED": ACK_READ}
#: Where the phone JID of an ``@lid`` sender may be (NOWEB raw message key).
LID_PHONE_PATHS = (("_data", "key", "senderPn"), ("_data", "key", "remoteJidAlt"))


class WahaGateway:
    """Talks to one WAHA session.

    Parameters:
      instance: has ``name`` (the session), ``url``, ``token`` (sent as
        ``X-Api-Key``) and ``options`` (``typing``, ``typing_ms``,
        ``timeout_seconds``, ``session``).
    """

    def __init__(self, instance: Any) -> None:
        options = options_of(instance)
        self.session = text_of(options.get(OPTION_SESSION)) or str(instance.name)
        self.typing = bool_option(options, OPTION_TYPING, default=True)
        self.typing_seconds = number_option(options, OPTION_TYPING_MS, default=DEFAULT_TYPING_MS) / MS_PER_SECOND
        self.client = GatewayClient(
            provider=PROVIDER,
            base_url=instance.url,
            headers={"X-Api-Key": instance.token},
            timeout_seconds=number_option(options, OPTION_TIMEOUT, default=DEFAULT_TIMEOUT_SECONDS),
        )

    def send_text(self, *, phone: str, chat_id: str, text: str, contact_id: int | None = None) -> SendResult:
        """Show "typing..." (unless disabled), then send ``text``.

        Parameters:
          phone: E.164, used when no chat id is known yet.
          chat_id: the chatId a number check returned ("" if none).
          text: the message.
          contact_id: unused (the gateway has no use for it).
        """
        target = _chat_id_for(phone=phone, chat_id=chat_id)
        chat = {"session": self.session, "chatId": target}
        if self.typing:
            self._post("/api/startTyping", chat)
            time.sleep(self.typing_seconds)
            self._post("/api/stopTyping", chat)
        reply = self._post("/api/sendText", {**chat, "text": text, "linkPreview": False})
        return SendResult(provider_message_id=_message_id(reply.body), chat_id=target)

    def connection_state(self) -> str:
        """``CONNECTED``, ``CONNECTING`` or ``DOWN`` (also when the gateway cannot be asked)."""
        try:
            reply = self.client.call("GET", f"/api/sessions/{quote(self.session, safe='')}")
        except GatewayError:
            return DOWN
        if not reply.ok:
            return DOWN  # 404: no such session
        return STATES.get(text_of(dig(reply.body, "status")), DOWN)

    def check_number(self, phone: str) -> NumberCheck:
        """Ask whether ``phone`` is on WhatsApp and which chatId it has.

        Parameters:
          phone: E.164 (``+55...``) or digits.
        """
        params = {"phone": digits_of(phone), "session": self.session}
        reply = self.client.call("GET", "/api/contacts/check-exists", params=params)
        if not reply.ok:
            raise _error(reply)
        if not isinstance(reply.body, Mapping):
            raise GatewayError(f"{PROVIDER} {reply.status}: unexpected number check answer", transient=True)
        if reply.body.get("numberExists") is not True:
            return NumberCheck(exists=False)
        return NumberCheck(exists=True, chat_id=text_of(reply.body.get("chatId")))

    def parse_webhook(self, body: Mapping) -> list[WebhookEvent]:
        """The events of one webhook body; unknown events and malformed bodies give [].

        Parameters:
          body: the parsed JSON envelope ``{"id", "event", "session", "payload", ...}``.
        """
        if not isinstance(body, Mapping) or not isinstance(body.get("payload"), Mapping):
            return []
        parser = _PARSERS.get(text_of(body.get("event")).lower())
        event = parser(body["payload"]) if parser else None
        return [event] if event is not None else []

    def _post(self, path: str, body: Mapping) -> Reply:
        reply = self.client.call("POST", path, json_body=body)
        if not reply.ok:
            raise _error(reply)
        return reply


def verify_waha_signature(raw_body: bytes, headers: Mapping[str, str], secret: str) -> bool:
    """Whether ``X-Webhook-Hmac`` is the hex HMAC-SHA512 of ``raw_body`` with ``secret``.

    Parameters:
      raw_body: the request body exactly as received (not re-serialized JSON).
      headers: the request headers (names in any case).
      secret: the HMAC key configured on the WAHA webhook; empty never verifies.
    """
    lowered = {str(name).lower(): str(value) for name, value in headers.items()}
    signature = lowered.get(SIGNATURE_HEADER, "").strip().lower()
    algorithm = lowered.get(ALGORITHM_HEADER, SIGNATURE_ALGORITHM).strip().lower()
    if not secret or not signature or algorithm != SIGNATURE_ALGORITHM:
        return False
    expected = hmac.new(secret.encode(), raw_body, hashlib.sha512).hexdigest()
    return hmac.compare_digest(expected, signature)


def _chat_id_for(*, phone: str, chat_id: str) -> str:
    """The chatId to send to; an Evolution-style ``@s.whatsapp.net`` id becomes ``@c.us``."""
    if not chat_id:
        return f"{digits_of(phone)}@{CHAT_DOMAIN}"
    user, domain = jid_parts(chat_id)
    return f"{user}@{CHAT_DOMAIN}" if domain == "s.whatsapp.net" else chat_id


def _message_id(body: Any) -> str:
    """The id acks will carry: WEBJS ``id._serialized``, a plain ``id`` string,
    or NOWEB's ``key`` turned into ``<fromMe>_<chatId>_<key.id>``; "" if none."""
    serialized = text_of(dig(body, "id", "_serialized")) or text_of(dig(body, "id"))
    key_id = text_of(dig(body, "key", "id"))
    if serialized or not key_id:
        return serialized
    user, domain = jid_parts(text_of(dig(body, "key", "remoteJid")))
    chat = f"{user}@{CHAT_DOMAIN}" if domain == "s.whatsapp.net" else f"{user}@{domain}"
    from_me = "true" if dig(body, "key", "fromMe") is not False else "false"
    return f"{from_me}_{chat}_{key_id}" if user else key_id


def _message_of(reply: Reply) -> str:
    """The error text, wherever this WAHA answer put it."""
    for path in (("exception", "message"), ("message",), ("error",)):
        message = flatten_message(dig(reply.body, *path))
        if message:
            return message
    return shorten(" ".join(reply.text.split()))


def _error(reply: Reply) -> GatewayError:
    status = reply.status
    message = shorten(_message_of(reply))
    if status == HTTP_UNAUTHORIZED:
        return status_error(provider=PROVIDER, reply=reply, message=message)
    if status == HTTP_NOT_FOUND:
        # "We didn't find a session" (STOPPED / unknown) or a wrong base URL.
        return GatewayError(f"{PROVIDER} {status}: {message}", transient=True, instance_down=True)
    if status == HTTP_UNPROCESSABLE and any(marker in message for marker in SESSION_ERROR_MARKERS):
        session_status = text_of(dig(reply.body, "status"))
        detail = f"session is {session_status}, not WORKING" if session_status else message
        return GatewayError(f"{PROVIDER} {status}: {detail}", transient=True, instance_down=True)
    return status_error(provider=PROVIDER, reply=reply, message=message)


def _inbound(payload: Mapping) -> WebhookEvent | None:
    if payload.get("fromMe") is True:
        return None  # message.any also reports what we sent
    sender = text_of(payload.get("from"))
    message_id = text_of(payload.get("id")) or text_of(dig(payload, "id", "_serialized"))
    if not message_id or not is_personal_chat(sender):
        return None
    phone = phone_from_jid(sender)
    if jid_parts(sender)[1] == "lid":
        alternates = (phone_from_jid(text_of(dig(payload, *path))) for path in LID_PHONE_PATHS)
        phone = next((alt for alt in alternates if alt), "")
    text = text_of(payload.get("body"))
    return InboundMessage(provider_message_id=message_id, chat_id=sender, phone=phone, text=text)


def _ack(payload: Mapping) -> WebhookEvent | None:
    if payload.get("fromMe") is False:
        return None  # a status change of a message the customer sent
    message_id = text_of(payload.get("id")) or text_of(dig(payload, "id", "_serialized"))
    code = payload.get("ack")
    state = ACK_CODES.get(code) if isinstance(code, int) and not isinstance(code, bool) else None
    state = state or ACK_NAMES.get(text_of(payload.get("ackName")).upper())
    if not message_id or state is None:
        return None
    return AckEvent(provider_message_id=message_id, status=state)


def _session_status(payload: Mapping) -> WebhookEvent | None:
    state = STATES.get(text_of(payload.get("status")))
    return ConnectionEvent(state=state) if state else None


_PARSERS: dict[str, Callable[[Mapping], WebhookEvent | None]] = {
    "message": _inbound,
    "message.any": _inbound,
    "message.ack": _ack,
    "session.status": _session_status,
}
