"""The ``waha`` gateway: WAHA (WhatsApp HTTP API), any engine.

Shapes follow WAHA Core 2024.10.8's real answers (see PROVIDERS.md). Decisions:

* a session that is missing or STOPPED (404) or not WORKING yet (422) means
  the instance is down: transient and ``instance_down``, never a contact's
  permanent failure; so are Core's 422 for a session other than ``default``
  and a 401 (wrong or rotated key, on builds that enforce it): configuration
  problems of the whole instance, with a reason that says what to fix;
* WAHA sends to numbers that are not on WhatsApp without error: callers must
  :meth:`WahaGateway.check_number` first;
* an ``@lid`` sender has no phone unless the NOWEB raw data (``_data.key``)
  carries ``senderPn`` / ``remoteJidAlt``;
* :meth:`WahaGateway.connection_state` never raises: a gateway it cannot ask
  is reported ``DOWN`` (:meth:`~WahaGateway.connection_status` says why);
* webhooks: WAHA Core 2024.10 neither signs nor retries, so the instance's
  secret is in the webhook URL; an ``X-Webhook-Hmac`` (Plus / newer builds)
  is verified when it comes, or always with the ``require_hmac`` option;
* :meth:`WahaGateway.find_sent` reads ``GET /api/{session}/chats/{chatId}/messages``
  (NOWEB answers 400 unless its store is enabled: then it cannot tell).
"""
from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

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
    HTTP_NOT_FOUND,
    HTTP_UNAUTHORIZED,
    HTTP_UNPROCESSABLE,
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
from billing.adapters.providers.registry import (
    BodySignature,
    Provider,
    SignedDelivery,
    Webhook,
    WebhookBody,
    WebhookDoc,
    drop_null_defaults,
)
from billing.bodies import read_json
from billing.errors import BillingError

NAME = "waha"

#: Instance options of WAHA's own (``typing``, ``typing_ms`` and
#: ``timeout_seconds`` are every HTTP gateway's: see :class:`WahaOptions`).
#: Overrides the session name (WAHA Core only has ``default``); else instance.name.
OPTION_SESSION = "session"
#: When true, every webhook must carry a valid X-Webhook-Hmac (WAHA Plus signs;
#: Core 2024.10 never does, so this stays off for Core).
OPTION_REQUIRE_HMAC = "require_hmac"
#: The only session WAHA Core has.
CORE_SESSION = "default"

#: Longest session name WAHA is given (the instance's name has the same bound).
MAX_SESSION_LENGTH = 120
#: WAHA's chat id domain for phone numbers.
CHAT_DOMAIN = "c.us"

#: Webhook signature headers and the only algorithm WAHA uses.
SIGNATURE_HEADER = "x-webhook-hmac"
ALGORITHM_HEADER = "x-webhook-hmac-algorithm"
SIGNATURE_ALGORITHM = "sha512"
#: Headers that come with WAHA's signature (Plus / newer builds): when the
#: request was sent (Unix milliseconds) and the request's id.
TIMESTAMP_HEADER = "x-webhook-timestamp"
REQUEST_ID_HEADER = "x-webhook-request-id"

#: Texts of WAHA errors about the session, not the message.
SESSION_STATUS_MARKER = "Session status is not as expected"
CORE_ONLY_DEFAULT_MARKER = "only 'default' session"
#: NOWEB's 400 for store reads when its message store is off.
STORE_DISABLED_MARKER = "Enable NOWEB store"

#: What a signed webhook's unreadable time counts as (refused as stale).
EPOCH = datetime(1970, 1, 1)

#: How many of the chat's latest messages find_sent reads.
FIND_SENT_LIMIT = 100
#: Why a session in each status cannot send ("" for WORKING).
STATUS_REASONS = {
    "STARTING": "is starting, not connected to WhatsApp yet",
    "SCAN_QR_CODE": "waits for its QR code to be scanned",
    "STOPPED": "is stopped (start it: POST /api/sessions/{session}/start)",
    "FAILED": "failed (restart it, or scan its QR code again)",
}

#: Session statuses -> ours.
STATES = {"WORKING": CONNECTED, "STARTING": CONNECTING, "SCAN_QR_CODE": CONNECTING, "STOPPED": DOWN, "FAILED": DOWN}
#: ``ack`` codes (-1 ERROR, 0 PENDING, 1 SERVER, 2 DEVICE, 3 READ, 4 PLAYED) -> ours.
ACK_CODES = {-1: ACK_FAILED, 0: ACK_SENT, 1: ACK_SENT, 2: ACK_DELIVERED, 3: ACK_READ, 4: ACK_READ}
#: ``ackName`` words -> ours, for payloads without a usable code.
ACK_NAMES = {"ERROR": ACK_FAILED, "PENDING": ACK_SENT, "SERVER": ACK_SENT, "DEVICE": ACK_DELIVERED,
             "READ": ACK_READ, "PLAYED": ACK_READ}
#: Where the phone JID of an ``@lid`` sender may be (NOWEB raw message key).
LID_PHONE_PATHS = (("_data", "key", "senderPn"), ("_data", "key", "remoteJidAlt"))


class WahaGateway(Gateway):
    """Talks to one WAHA session.

    Parameters:
      instance: has ``name`` (the session), ``url``, ``token`` (sent as
        ``X-Api-Key``) and ``options`` (:class:`WahaOptions`).
    """

    def __init__(self, instance: Any) -> None:
        options = options_of(instance)
        self.session = text_of(options.get(OPTION_SESSION)) or str(instance.name)
        #: The session's name on the gateway (webhooks name it in ``session``).
        self.remote_name = self.session
        self.typing = bool_option(options, OPTION_TYPING, default=True)
        self.typing_seconds = number_option(options, OPTION_TYPING_MS, default=DEFAULT_TYPING_MS) / MS_PER_SECOND
        self.client = GatewayClient(
            provider=NAME,
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
            try:
                self._post("/api/startTyping", chat)
                time.sleep(self.typing_seconds)
                self._post("/api/stopTyping", chat)
            except GatewayError as exc:
                # No answer to a typing call says nothing about the message: it was not sent yet.
                raise GatewayError(exc.reason, transient=exc.transient, instance_down=exc.instance_down) from exc
        reply = self._post("/api/sendText", {**chat, "text": text, "linkPreview": False})
        return SendResult(provider_message_id=_message_id(reply.body), chat_id=target)

    def connection_status(self) -> ConnectionStatus:
        """The session's state and, when not WORKING, why.

        Raises:
          GatewayError: the gateway could not be asked, or has no such
            session (404), or rejected the key (401), with the reason.
        """
        reply = self.client.call("GET", f"/api/sessions/{quote(self.session, safe='')}")
        if not reply.ok:
            raise self._session_error(reply)
        raw = text_of(dig(reply.body, "status"))
        return ConnectionStatus(STATES.get(raw, DOWN), _status_reason(self.session, raw))

    def find_sent(self, *, chat_id: str, text: str, since: datetime) -> SendResult | None:
        """The message with exactly ``text`` we sent to ``chat_id`` at or after
        ``since``, from ``GET /api/{session}/chats/{chatId}/messages``.

        Parameters:
          chat_id: the chatId the message was addressed to (or E.164 digits).
          text: the message text, exactly as sent.
          since: naive UTC; when the ambiguous attempt started.

        Returns:
          The message's id and chat, or None when the chat's latest messages
          do not show it.

        Raises:
          LookupUnavailable: the gateway could not be asked, has no such
            endpoint, keeps no messages (NOWEB store off), or answered a shape
            we cannot read.
        """
        target = _chat_id_for(phone=chat_id, chat_id=chat_id if "@" in chat_id else "")
        path = f"/api/{quote(self.session, safe='')}/chats/{quote(target, safe='@.')}/messages"
        try:
            reply = self.client.call("GET", path, params={"limit": str(FIND_SENT_LIMIT), "downloadMedia": "false"})
        except GatewayError as exc:
            raise LookupUnavailable(exc.reason) from exc
        if not reply.ok:
            raise LookupUnavailable(_error(reply).reason)
        if not isinstance(reply.body, list):
            raise LookupUnavailable(f"{NAME} {reply.status}: unexpected chat messages answer")
        earliest = naive_utc_epoch(since) - CLOCK_SKEW_SECONDS
        for message in reply.body:
            if not isinstance(message, Mapping) or message.get("fromMe") is not True:
                continue
            sent_at = epoch_seconds(message.get("timestamp"))
            if sent_at is None or sent_at < earliest or text_of(message.get("body")) != text:
                continue
            message_id = _message_id(message)
            if message_id:
                return SendResult(provider_message_id=message_id, chat_id=target)
        return None

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
            raise GatewayError(f"{NAME} {reply.status}: unexpected number check answer", transient=True)
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
        event_name = text_of(body.get("event")).lower()
        if event_name == "session.status":
            return self._session_events(body["payload"])
        parser = _PARSERS.get(event_name)
        event = parser(body["payload"]) if parser else None
        return [event] if event is not None else []

    def foreign_source(self, body: Mapping) -> str:
        """The session a webhook body names when it is not this instance's
        ("" when it names this one, or none).

        Parameters:
          body: the parsed JSON envelope (``session`` names the sender).
        """
        named = text_of(body.get("session")) if isinstance(body, Mapping) else ""
        return named if named and named != self.session else ""

    def _session_events(self, payload: Mapping) -> list[WebhookEvent]:
        raw = text_of(payload.get("status"))
        state = STATES.get(raw)
        return [ConnectionEvent(state=state, reason=_status_reason(self.session, raw))] if state else []

    def _session_error(self, reply: Reply) -> GatewayError:
        """The error of a session lookup: its 404 ("Session not found") means
        the gateway has no such session, which fails every message alike."""
        if reply.status != HTTP_NOT_FOUND:
            return _error(reply)
        hint = f" (WAHA Core has only the '{CORE_SESSION}' session)" if self.session != CORE_SESSION else ""
        return GatewayError(f"{NAME} {reply.status}: no session '{self.session}' on the gateway{hint}",
                            transient=True, instance_down=True)

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


def webhook_signature_ok(raw_body: bytes, headers: Mapping[str, str], *, secret: str, required: bool) -> bool:
    """Whether a webhook that already proved its URL secret passes the HMAC
    rule: an ``X-Webhook-Hmac`` that comes must verify; one that does not come
    is fine unless the instance requires it (WAHA Core never signs).

    Parameters:
      raw_body: the request body exactly as received.
      headers: the request headers (names in any case).
      secret: the instance's webhook secret (the HMAC key).
      required: the instance's ``require_hmac`` option.
    """
    signed = any(str(name).lower() == SIGNATURE_HEADER for name in headers.keys())
    if not signed and not required:
        return True
    return verify_waha_signature(raw_body, headers, secret)


def requires_hmac(instance: Any) -> bool:
    """The instance's ``require_hmac`` option (default off: Core never signs).

    Parameters:
      instance: has ``options``.
    """
    return bool_option(options_of(instance), OPTION_REQUIRE_HMAC, default=False)


def signature_accepted(raw_body: bytes, headers: Mapping[str, str], instance: Any) -> bool:
    """:func:`webhook_signature_ok` with the instance's secret and ``require_hmac`` option.

    Parameters:
      raw_body: the request body exactly as received.
      headers: the request headers (names in any case).
      instance: has ``webhook_secret`` and ``options``.
    """
    return webhook_signature_ok(raw_body, headers, secret=instance.webhook_secret, required=requires_hmac(instance))


def signed_delivery(raw_body: bytes, headers: Mapping[str, str]) -> SignedDelivery | None:
    """The times and event id of a request that carries ``X-Webhook-Hmac``
    (None when it carries none: WAHA Core).

    The times are ``X-Webhook-Timestamp`` and the envelope's ``timestamp``
    (covered by the signature, so a replay cannot freshen it); the event id
    is the envelope's ``id`` (stable across WAHA's retries, and signed), else
    ``X-Webhook-Request-Id``. A time that cannot be read counts as the
    epoch: refused as stale.

    Parameters:
      raw_body: the request body exactly as received.
      headers: the request headers (names in any case).
    """
    lowered = {str(name).lower(): str(value) for name, value in headers.items()}
    if SIGNATURE_HEADER not in lowered:
        return None
    try:  # bounded as every body is, its text storable (the event id is stored)
        body = read_json(raw_body, text="clean")
    except BillingError:
        body = None
    envelope = body if isinstance(body, dict) else {}
    raw_times = [value for value in (lowered.get(TIMESTAMP_HEADER), envelope.get("timestamp")) if value is not None]
    event_id = envelope.get("id")
    if not isinstance(event_id, str) or not event_id:
        event_id = lowered.get(REQUEST_ID_HEADER, "")
    return SignedDelivery(sent_at=tuple(_utc_or_epoch(value) for value in raw_times), event_id=event_id.strip())


def _utc_or_epoch(value: Any) -> datetime:
    """A WAHA timestamp (milliseconds, or seconds) as naive UTC; the epoch when unreadable."""
    seconds = epoch_seconds(value)
    try:
        return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
    except (TypeError, ValueError, OverflowError, OSError):
        return EPOCH


def _status_reason(session: str, raw: str) -> str:
    """Why a session in WAHA status ``raw`` cannot send ("" when WORKING)."""
    if raw == "WORKING":
        return ""
    detail = STATUS_REASONS.get(raw, f"is in an unknown status {raw!r}" if raw else "has no status")
    return f"{NAME}: session '{session}' {detail.format(session=session)}"


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


#: The reason of a 404 without a message field (a wrong base URL answers another server's page).
NOT_FOUND_MESSAGE = "not found (unknown session, or a wrong base URL)"
#: Where this gateway's error answers put their text, in order.
_ERROR_MESSAGE_PATHS = (("exception", "message"), ("message",), ("error",))


def _error(reply: Reply) -> GatewayError:
    status = reply.status
    # Markers are looked for in the whole message field; reasons quote it cut short.
    whole = gateway_message(reply, _ERROR_MESSAGE_PATHS)
    message = shorten(whole, limit=MAX_GATEWAY_MESSAGE_LENGTH)
    if status == HTTP_UNAUTHORIZED:
        return status_error(provider=NAME, reply=reply, message=message)
    if status == HTTP_NOT_FOUND:
        # "We didn't find a session" (STOPPED / unknown) or a wrong base URL.
        return GatewayError(f"{NAME} {status}: {message or NOT_FOUND_MESSAGE}", transient=True, instance_down=True)
    if status == HTTP_UNPROCESSABLE and CORE_ONLY_DEFAULT_MARKER in whole:
        # Core 2024.10 answers this for any other session name: every message would fail.
        return GatewayError(
            f"{NAME} {status}: WAHA Core supports only the '{CORE_SESSION}' session: set the instance's "
            f"session option (or name) to '{CORE_SESSION}'",
            transient=True, instance_down=True,
        )
    if status == HTTP_UNPROCESSABLE and SESSION_STATUS_MARKER in whole:
        session_status = text_of(dig(reply.body, "status"))
        detail = f"session is {session_status}, not WORKING" if session_status else message
        return GatewayError(f"{NAME} {status}: {detail}", transient=True, instance_down=True)
    return status_error(provider=NAME, reply=reply, message=message)


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


_PARSERS: dict[str, Callable[[Mapping], WebhookEvent | None]] = {
    "message": _inbound,
    "message.any": _inbound,
    "message.ack": _ack,
}


# --- the declaration ---------------------------------------------------------------

class WahaOptions(HttpGatewayOptions):
    """A WAHA instance's options."""

    session: str = Field(
        None, min_length=1, max_length=MAX_SESSION_LENGTH,
        description=f"The WAHA session to use (default: the instance's name; WAHA Core has only '{CORE_SESSION}').",
    )
    require_hmac: bool = Field(
        None, description="Refuse webhooks without a valid X-Webhook-Hmac (default false: WAHA Core never signs; "
        "WAHA Plus does).",
    )


class WahaPayload(WebhookBody):
    id: str = Field(None, description="The message id.")
    fromMe: bool = Field(None, description="True for the messages we sent.")
    to: str = Field(None, description="message.ack: the recipient.")
    body: str = Field(None, description="message: the text.")
    ack: int = Field(None, description="message.ack: -1 error, 1 server, 2 device, 3 read, 4 played.")
    ackName: str = Field(None, description="message.ack: ERROR, PENDING, SERVER, DEVICE, READ, PLAYED.")
    status: str = Field(None, description="session.status: WORKING, STARTING, SCAN_QR_CODE, STOPPED, FAILED.")
    # "from" is a keyword: declared through an alias.
    from_: str = Field(None, alias="from", description="message: the sender, <digits>@c.us for a person.")


class WahaWebhook(WebhookBody):
    """The envelope WAHA posts for each event."""

    id: str = Field(None, description="The event id (WAHA Plus; Core 2024.10 sends none): on a signed request, an "
                    "id received already is acknowledged with events 0 and not applied again.")
    timestamp: int = Field(None, description="When the event happened (Unix milliseconds; WAHA Plus): on a signed "
                           "request, more than 5 minutes from our clock is refused (401).")
    event: Literal["message", "message.any", "message.ack", "session.status"] = Field(
        None, description="The event; others are acknowledged and ignored."
    )
    session: str = Field(
        None, description="The WAHA session name: must be the session this URL's instance uses (else 403)."
    )
    payload: WahaPayload = Field(None, description="The event's data.")


class _Headers(BaseModel):
    model_config = ConfigDict(json_schema_extra=drop_null_defaults, populate_by_name=True)

    x_webhook_timestamp: str = Field(
        None, alias="X-Webhook-Timestamp",
        description="When WAHA sent the request (Unix milliseconds): a signed request needs it, or the envelope's "
        "timestamp, within 5 minutes of our clock (401 otherwise).",
    )
    x_webhook_request_id: str = Field(
        None, alias="X-Webhook-Request-Id", description="The request's id: de-duplicates replays when the envelope has no id.",
    )


class WahaSecretHeaders(_Headers):
    x_webhook_hmac: str = Field(
        None, alias="X-Webhook-Hmac",
        description="Hex HMAC-SHA512 of the raw body, keyed with the instance's webhook secret: verified when sent "
        "(WAHA Plus), required when the instance's options set require_hmac. WAHA Core sends none.",
    )
    x_webhook_hmac_algorithm: Literal["sha512"] = Field(
        None, alias="X-Webhook-Hmac-Algorithm", description="sha512 when sent."
    )


class WahaHeaders(_Headers):
    x_webhook_hmac: str = Field(
        alias="X-Webhook-Hmac",
        description="Hex HMAC-SHA512 of the raw body, keyed with the instance's webhook secret.",
    )
    x_webhook_hmac_algorithm: Literal["sha512"] = Field(
        None, alias="X-Webhook-Hmac-Algorithm", description="sha512 when sent."
    )


PROVIDER = Provider(
    name=NAME,
    label="WAHA",
    adapter=WahaGateway,
    options=WahaOptions,
    webhook=Webhook(
        doc=WebhookDoc(
            summary="WAHA events (acks, replies, session status)",
            description="WAHA Core does not sign its webhooks: the instance's webhook secret is the last segment of "
            "the URL configured on the gateway (401 when it does not match). An X-Webhook-Hmac (WAHA Plus, newer "
            "builds) is verified when it comes, and required when the instance's options set require_hmac (401 "
            "when missing or wrong). A signed request's X-Webhook-Timestamp and envelope timestamp must be within 5 "
            "minutes of our clock (401), and an event id received already is acknowledged with events 0 and not "
            "applied again. An unknown instance id is answered like a wrong secret. A body whose session is not "
            "this instance's is refused with 403. Handling is idempotent; a body that is not understood is "
            "acknowledged with events 0.",
        ),
        body=WahaWebhook,
        show=(
            "webhook URL (WAHA session webhook): {url}",
            "webhook HMAC key (sha512, optional: WAHA Plus signs, Core does not): {secret}",
        ),
        signature=BodySignature(
            accepts=signature_accepted,
            verifies=verify_waha_signature,
            error="bad or missing X-Webhook-Hmac signature",
            headers=WahaSecretHeaders,
            signed_url=WebhookDoc(
                summary="WAHA events, signed (the former URL, without the secret)",
                description="Kept for gateways configured before the secret moved into the URL: only signed bodies "
                "are accepted (X-Webhook-Hmac, hex HMAC-SHA512 of the raw body keyed with the instance's webhook "
                "secret; 401 when missing or wrong; the timestamps and event id are checked as on the secret URL). WAHA "
                "Core never signs: configure "
                "/webhooks/waha/{instance_id}/{secret} instead. A body whose session is not this instance's is "
                "refused with 403.",
            ),
            signed_headers=WahaHeaders,
            delivery=signed_delivery,
        ),
    ),
)
