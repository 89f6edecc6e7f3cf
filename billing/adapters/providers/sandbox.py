"""The ``sandbox`` gateway: records each message in the database (the outbox)
instead of calling WhatsApp, for demos, development and tests."""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from billing.adapters.models import Instance, SandboxMessage
from billing.adapters.providers.base import CONNECTED, ConnectionStatus, NumberCheck, SendResult
from billing.adapters.providers.http import digits_of, jid_parts
from billing.adapters.providers.registry import GatewayOptions, Provider

#: Provider message ids look like WhatsApp's, so the rest of the flow (acks,
#: replies) is exercised the same way.
MESSAGE_ID_PREFIX = "SANDBOX"
#: The chat id domain the sandbox answers with (Evolution's spelling).
PHONE_JID_DOMAIN = "s.whatsapp.net"


class SandboxGateway:
    """Records messages in :class:`SandboxMessage` rows; always connected.

    Parameters:
      instance: the sandbox instance (its tenant and id tag each message).
    """

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.remote_name = instance.name

    def send_text(self, *, phone: str, chat_id: str, text: str, contact_id: int | None) -> SendResult:
        message_id = f"{MESSAGE_ID_PREFIX}{uuid.uuid4().hex[:20].upper()}"
        SandboxMessage.create(
            tenant=self.instance.tenant_id,
            instance=self.instance.id,
            contact_id=contact_id,
            phone=phone,
            text=text,
            provider_message_id=message_id,
        )
        return SendResult(provider_message_id=message_id, chat_id=chat_id or f"{phone.lstrip('+')}@{PHONE_JID_DOMAIN}")

    def connection_state(self) -> str:
        return CONNECTED

    def connection_status(self) -> ConnectionStatus:
        return ConnectionStatus(CONNECTED)

    def find_sent(self, *, chat_id: str, text: str, since: datetime) -> SendResult | None:
        """The outbox row with exactly ``text`` for ``chat_id``'s phone, recorded at or after ``since``.

        Parameters:
          chat_id: a phone JID / chatId or E.164 phone (the outbox keeps phones).
          text: the message text, exactly as sent.
          since: naive UTC.
        """
        phone = f"+{digits_of(jid_parts(chat_id)[0])}"
        row = (
            SandboxMessage.select()
            .where((SandboxMessage.instance == self.instance.id) & (SandboxMessage.phone == phone)
                   & (SandboxMessage.text == text) & (SandboxMessage.sent_at >= since))
            .order_by(SandboxMessage.id)
            .first()
        )
        if row is None:
            return None
        return SendResult(provider_message_id=row.provider_message_id, chat_id=f"{phone[1:]}@{PHONE_JID_DOMAIN}")

    def check_number(self, phone: str) -> NumberCheck:
        return NumberCheck(exists=True, chat_id=f"{phone.lstrip('+')}@{PHONE_JID_DOMAIN}")

    def parse_webhook(self, body: Mapping) -> list:
        return []

    def foreign_source(self, body: Mapping) -> str:
        return ""


class SandboxOptions(GatewayOptions):
    """The sandbox takes no options (it calls no gateway)."""


PROVIDER = Provider(
    name="sandbox",
    label="Sandbox (records messages in the database, sends nothing)",
    adapter=SandboxGateway,
    options=SandboxOptions,
    needs_url=False,
)
