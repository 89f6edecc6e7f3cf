"""The ``sandbox`` gateway: records each message in the database (the outbox)
instead of calling WhatsApp, for demos, development and tests."""
from __future__ import annotations

import uuid

from billing.models import Instance, SandboxMessage
from billing.providers.base import CONNECTED, NumberCheck, SendResult

#: Provider message ids look like WhatsApp's, so the rest of the flow (acks,
#: replies) is exercised the same way.
MESSAGE_ID_PREFIX = "SANDBOX"


class SandboxGateway:
    def __init__(self, instance: Instance) -> None:
        self.instance = instance

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
        return SendResult(provider_message_id=message_id, chat_id=chat_id or f"{phone.lstrip('+')}@s.whatsapp.net")

    def connection_state(self) -> str:
        return CONNECTED

    def check_number(self, phone: str) -> NumberCheck:
        return NumberCheck(exists=True, chat_id=f"{phone.lstrip('+')}@s.whatsapp.net")

    def parse_webhook(self, body) -> list:
        return []
