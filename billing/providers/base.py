"""What every WhatsApp gateway adapter offers, and how it reports failure."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SendResult:
    """What a gateway answered to a send.

    Parameters:
      provider_message_id: the gateway's id for the message (acks refer to it).
      chat_id: the JID / chatId WhatsApp resolved the number to, if given.
    """

    provider_message_id: str
    chat_id: str = ""


class GatewayError(Exception):
    """A send or call that did not work.

    Parameters:
      reason: one readable sentence (stored as the contact's reason).
      transient: True when trying again later may work (timeouts, 5xx, 429,
        instance down); False when it never will (number not on WhatsApp, 4xx).
    """

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class Gateway(Protocol):
    def send_text(self, *, phone: str, chat_id: str, text: str, contact_id: int | None) -> SendResult:
        """Send ``text`` to ``chat_id`` if known, else to the E.164 ``phone``."""

    def connection_state(self) -> str:
        """``connected``, ``connecting`` or ``down``."""
