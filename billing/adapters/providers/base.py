"""What every WhatsApp gateway adapter offers, and how it reports failure.

Adapters translate one gateway's HTTP API and webhooks into these types, so
the rest of billing/ never sees a gateway's own shapes.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, Union

#: Connection states every adapter reports (gateways' own words are mapped).
CONNECTED = "connected"
CONNECTING = "connecting"
DOWN = "down"

#: Message states an ack may report, in the order a message moves through them.
ACK_SENT = "sent"
ACK_DELIVERED = "delivered"
ACK_READ = "read"
ACK_FAILED = "failed"


@dataclass(frozen=True)
class SendResult:
    """What a gateway answered to a send.

    Parameters:
      provider_message_id: the gateway's id for the message (acks refer to it).
      chat_id: the JID / chatId WhatsApp resolved the number to, if given.
    """

    provider_message_id: str
    chat_id: str = ""


@dataclass(frozen=True)
class NumberCheck:
    """Whether a phone has a WhatsApp account, and the chat id to send to.

    Parameters:
      exists: False means sending would silently go nowhere (permanent).
      chat_id: the JID (Evolution ``...@s.whatsapp.net``) or chatId (WAHA
        ``...@c.us``) the gateway resolved; may lack a Brazilian mobile's 9.
    """

    exists: bool
    chat_id: str = ""


@dataclass(frozen=True)
class AckEvent:
    """A message's delivery state changed (``ACK_*``)."""

    provider_message_id: str
    status: str


@dataclass(frozen=True)
class InboundMessage:
    """A customer wrote to us.

    Parameters:
      provider_message_id: the gateway's id of the inbound message (dedupe key).
      chat_id: the sender's chat id as the gateway gives it.
      phone: the sender's phone in E.164 when it can be derived, else "".
      text: the message text ("" for media without caption).
    """

    provider_message_id: str
    chat_id: str
    phone: str
    text: str


@dataclass(frozen=True)
class ConnectionEvent:
    """The instance's connection changed.

    Parameters:
      state: ``CONNECTED``, ``CONNECTING`` or ``DOWN``.
      reason: why it is not connected, in words an operator can act on
        ("" when connected, or when the gateway gave no detail).
    """

    state: str
    reason: str = ""


@dataclass(frozen=True)
class ConnectionStatus:
    """What a gateway answered when asked for the instance's connection.

    Parameters:
      state: ``CONNECTED``, ``CONNECTING`` or ``DOWN``.
      reason: why it is not connected ("" when connected).
    """

    state: str
    reason: str = ""


WebhookEvent = Union[AckEvent, InboundMessage, ConnectionEvent]


class GatewayError(Exception):
    """A send or call that did not work.

    Parameters:
      reason: one readable sentence (stored as the contact's reason, or as the
        instance's ``health_reason`` when ``instance_down``).
      transient: True when trying again later may work (timeouts, 5xx, 429,
        instance down); False when it never will (number not on WhatsApp, 4xx).
      instance_down: True when the failure would hit every contact alike: the
        instance is not connected, or it is misconfigured (wrong or rotated
        token, unknown instance or session, a request shape the server rejects
        for every message). Its queues wait rather than burn attempts.
      ambiguous: True when the request may have reached the gateway although
        no answer came (read timeout, connection reset after the request was
        written): the message may have gone out, so ask :meth:`Gateway.find_sent`
        before sending it again. False when it certainly did not go out
        (connection refused, DNS failure, connect timeout, or an HTTP answer).
    """

    def __init__(self, reason: str, *, transient: bool, instance_down: bool = False, ambiguous: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.instance_down = instance_down
        self.ambiguous = ambiguous


class LookupUnavailable(Exception):
    """The gateway cannot tell whether a message went out (no such endpoint,
    no message store, an error, an answer we cannot read).

    Parameters:
      reason: one readable sentence (recorded with the decision to resend).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Gateway(Protocol):
    def send_text(self, *, phone: str, chat_id: str, text: str, contact_id: int | None) -> SendResult:
        """Send ``text`` to ``chat_id`` if known, else to the E.164 ``phone``."""

    def connection_state(self) -> str:
        """``CONNECTED``, ``CONNECTING`` or ``DOWN`` (never raises): the state
        of :meth:`connection_status`, ``DOWN`` when the gateway cannot be
        asked. Adapters that subclass :class:`Gateway` inherit this."""
        try:
            return self.connection_status().state
        except GatewayError:
            return DOWN

    def connection_status(self) -> ConnectionStatus:
        """The state and, when not connected, why.

        Raises:
          GatewayError: the gateway could not be asked (its reason says why).
        """

    def find_sent(self, *, chat_id: str, text: str, since: datetime) -> SendResult | None:
        """The outgoing message with exactly ``text`` sent to ``chat_id`` at or
        after ``since`` (naive UTC), None when the gateway shows none.

        Raises:
          LookupUnavailable: the gateway cannot tell.
        """

    def check_number(self, phone: str) -> NumberCheck:
        """Ask the gateway whether the E.164 ``phone`` is on WhatsApp."""

    def parse_webhook(self, body: Mapping) -> list[WebhookEvent]:
        """The events one webhook body carries (unknown events give [])."""

    def foreign_source(self, body: Mapping) -> str:
        """The instance / session a webhook body names when it is not this
        instance's on the gateway ("" when it names this one, or none)."""
