"""Asking the gateway, once per tenant and phone, whether a number is on
WhatsApp and which chat id (JID) it resolves to.

Sending to a Brazilian mobile in the wrong form (with the 9 when the account
was registered without it) goes nowhere, silently; the gateway's answer is the
form that reaches the person, and it is also how replies are matched.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from billing.adapters.models import WhatsappNumber
from billing.adapters.providers import Gateway

#: A check is trusted this long; people do join (and leave) WhatsApp.
NUMBER_CHECK_TTL = timedelta(days=30)

#: The contact's reason when the gateway says the number has no WhatsApp.
NOT_ON_WHATSAPP = "number is not on WhatsApp"


def resolve_chat_id(tenant_id: int, phone: str, gateway: Gateway, *, now: datetime) -> str | None:
    """The chat id to send to, or None when the number is not on WhatsApp.

    Raises:
      GatewayError: the check itself failed (treated like a failed send).
    """
    cached = WhatsappNumber.get_or_none((WhatsappNumber.tenant == tenant_id) & (WhatsappNumber.phone == phone))
    if cached is not None and now - cached.checked_at < NUMBER_CHECK_TTL:
        return cached.chat_id if cached.exists else None
    check = gateway.check_number(phone)
    (
        WhatsappNumber.insert(tenant=tenant_id, phone=phone, exists=check.exists, chat_id=check.chat_id, checked_at=now)
        .on_conflict(
            conflict_target=[WhatsappNumber.tenant, WhatsappNumber.phone],
            update={WhatsappNumber.exists: check.exists, WhatsappNumber.chat_id: check.chat_id,
                    WhatsappNumber.checked_at: now},
        )
        .execute()
    )
    return check.chat_id if check.exists else None
