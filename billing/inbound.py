"""What the gateways tell us: acks, connection changes and customers' replies.

Every handler is idempotent, because gateways retry webhooks (Evolution up to
10 times, WAHA 15): acks only move a contact forward (sent -> delivered ->
read), whatever order they arrive in; an inbound message is stored once per
gateway message id; a connection state is a state, not a toggle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import peewee
import structlog

from billing import callbacks, health, replies
from billing.clock import utcnow
from billing.db import write_transaction
from billing.models import Contact, Event, InboundMessage, Instance, OptOut, Tenant, WhatsappNumber
from billing.providers import gateway_for
from billing.providers.base import ACK_DELIVERED, ACK_FAILED, ACK_READ, AckEvent, ConnectionEvent
from billing.providers.base import InboundMessage as InboundEvent
from billing.states import ContactStatus

log = structlog.get_logger(__name__)

#: Intent recorded when a customer asks to receive messages again.
OPT_IN = "opt_in"

#: The contact's reason when a phone opted out.
OPTED_OUT_REASON = "opted out"

#: Statuses an ack may move a contact from, per ack (never backwards).
ACK_MOVES = {
    ACK_DELIVERED: ((ContactStatus.SENT,), ContactStatus.DELIVERED, "delivered_at"),
    ACK_READ: ((ContactStatus.SENT, ContactStatus.DELIVERED), ContactStatus.READ, "read_at"),
    ACK_FAILED: ((ContactStatus.SENT,), ContactStatus.FAILED, "finished_at"),
}


@dataclass
class Handled:
    """What a webhook caused that the caller must hand to the broker.

    Parameters:
      callbacks: callback deliveries to enqueue.
      resumed_queues: queues to dispatch (their instance came back).
      auto_replies: inbound message ids to answer with payment details.
      events: how many events the body carried.
    """

    callbacks: list[str] = field(default_factory=list)
    resumed_queues: list[str] = field(default_factory=list)
    auto_replies: list[int] = field(default_factory=list)
    events: int = 0


def handle(instance: Instance, events: list, *, now: datetime | None = None) -> Handled:
    """Apply the events one webhook body carried."""
    now = now or utcnow()
    handled = Handled(events=len(events))
    for event in events:
        if isinstance(event, AckEvent):
            handled.callbacks += apply_ack(instance, event, now=now)
        elif isinstance(event, ConnectionEvent):
            handled.resumed_queues += health.record_state(instance.id, event.state, now=now)
        elif isinstance(event, InboundEvent):
            deliveries, answer = record_reply(instance, event, now=now)
            handled.callbacks += deliveries
            handled.auto_replies += [answer] if answer else []
    return handled


def apply_ack(instance: Instance, event: AckEvent, *, now: datetime) -> list[str]:
    move = ACK_MOVES.get(event.status)
    if move is None or not event.provider_message_id:
        return []
    sources, target, stamp = move
    with write_transaction():
        contact = Contact.get_or_none(
            (Contact.provider_message_id == event.provider_message_id) & (Contact.tenant == instance.tenant_id)
        )
        if contact is None:
            return []
        fields = {"status": target, stamp: now, "updated_at": now}
        if target == ContactStatus.READ and contact.delivered_at is None:
            fields["delivered_at"] = now  # a read message was delivered, even if that ack never came
        if target == ContactStatus.FAILED:
            fields["reason"] = "the gateway reported a delivery error"
        moved = Contact.update(**fields).where((Contact.id == contact.id) & Contact.status.in_(sources)).execute()
        if not moved:
            return []
        Event.create(contact=contact.id, kind=target, detail={"provider_message_id": event.provider_message_id},
                     created_at=now)
        delivery = callbacks.emit_for_contact(contact.id, target, now=now)
    return [delivery] if delivery else []


def _phone_of(instance: Instance, event: InboundEvent) -> str:
    """The sender's phone as we store it. The chat id the number check
    returned comes first: a mobile registered without its 9 writes from a
    JID whose digits differ from the phone we sent to."""
    if event.chat_id:
        known = WhatsappNumber.get_or_none(
            (WhatsappNumber.tenant == instance.tenant_id) & (WhatsappNumber.chat_id == event.chat_id)
        )
        if known is not None:
            return known.phone
    return event.phone


def _last_contact(tenant_id: int, phone: str, chat_id: str) -> Contact | None:
    """The tenant's most recent contact sent to this person."""
    if not phone and not chat_id:
        return None
    match = (Contact.phone == phone) if phone else (Contact.chat_id == chat_id)
    return (
        Contact.select()
        .where((Contact.tenant == tenant_id) & match & Contact.sent_at.is_null(False))
        .order_by(Contact.sent_at.desc())
        .first()
    )


def record_reply(instance: Instance, event: InboundEvent, *, now: datetime) -> tuple[list[str], int | None]:
    """Store a customer's message once, classify it, apply an opt-out or
    opt-in at once, and emit ``contact.replied`` (and ``contact.opted_out``).

    Returns:
      The callback deliveries, and the inbound message's id when it should be
      answered with the contact's payment details (tenant auto_reply).
    """
    phone = _phone_of(instance, event)
    classification = replies.classify(event.text)
    intent = OPT_IN if replies.is_opt_back_in(event.text) else classification.intent
    deliveries: list[str] = []
    with write_transaction():
        contact = _last_contact(instance.tenant_id, phone, event.chat_id)
        try:
            stored = InboundMessage.create(
                tenant=instance.tenant_id, instance=instance.id, provider_message_id=event.provider_message_id,
                chat_id=event.chat_id, phone=phone, text=event.text, intent=intent, contact=contact, received_at=now,
            )
        except peewee.IntegrityError:
            return [], None  # a retried webhook: already handled
        if contact is not None:
            Event.create(contact=contact.id, kind="reply", created_at=now,
                         detail={"text": event.text, "intent": intent, "matched": classification.matched})
            deliveries.append(callbacks.emit_for_contact(contact.id, "replied", now=now, text=event.text, intent=intent))
        if phone and intent == replies.OPT_OUT:
            deliveries += opt_out(instance.tenant_id, phone, reason=event.text, now=now, replied=contact)
        elif phone and intent == OPT_IN:
            OptOut.delete().where((OptOut.tenant == instance.tenant_id) & (OptOut.phone == phone)).execute()
    log.info("reply", intent=intent, matched=classification.matched, contact_id=contact.id if contact else None)
    answer = stored.id if intent == replies.QUESTION and contact and payment_details(contact) and \
        Tenant.select(Tenant.auto_reply).where(Tenant.id == instance.tenant_id).scalar() else None
    return [d for d in deliveries if d], answer


def payment_details(contact: Contact) -> str:
    """The auto-reply to a payment question: the contact's PIX code and link."""
    variables = contact.variables or {}
    parts = []
    if variables.get("codigo_pix"):
        parts.append(f"Segue o PIX copia e cola:\n{variables['codigo_pix']}")
    if variables.get("link_pagamento"):
        parts.append(f"Ou pague pelo link: {variables['link_pagamento']}")
    return "\n\n".join(parts)


def send_auto_reply(inbound_id: int, *, now: datetime | None = None) -> bool:
    """Answer a payment question with the contact's payment details, once.

    Returns:
      True when the answer was sent now.

    Raises:
      GatewayError: the gateway failed (the caller may retry).
    """
    now = now or utcnow()
    message = InboundMessage.get_or_none(InboundMessage.id == inbound_id)
    if message is None or message.contact_id is None or message.instance_id is None:
        return False
    claimed = InboundMessage.update(answered_at=now).where(
        (InboundMessage.id == inbound_id) & InboundMessage.answered_at.is_null()
    ).execute()
    if not claimed:
        return False  # already answered (a redelivered message)
    contact = Contact.get_by_id(message.contact_id)
    text = payment_details(contact)
    if not text:
        return False
    result = gateway_for(Instance.get_by_id(message.instance_id)).send_text(
        phone=contact.phone, chat_id=message.chat_id or contact.chat_id, text=text, contact_id=contact.id
    )
    Event.create(contact=contact.id, kind="auto_reply", created_at=now,
                 detail={"inbound_id": inbound_id, "provider_message_id": result.provider_message_id})
    return True


def opt_out(tenant_id: int, phone: str, *, reason: str, now: datetime, replied: Contact | None = None) -> list[str]:
    """Stop every send to ``phone`` for the tenant, now and later. Call inside
    a write transaction. Returns the callback deliveries."""
    OptOut.insert(tenant=tenant_id, phone=phone, reason=reason[:500], created_at=now).on_conflict_ignore().execute()
    stopped = [
        c.id
        for c in Contact.select(Contact.id).where(
            (Contact.tenant == tenant_id) & (Contact.phone == phone)
            & Contact.status.in_((ContactStatus.PENDING, ContactStatus.QUEUED))
        )
    ]
    if stopped:
        Contact.update(status=ContactStatus.OPTED_OUT, reason=OPTED_OUT_REASON, finished_at=now, updated_at=now).where(
            Contact.id.in_(stopped) & Contact.status.in_((ContactStatus.PENDING, ContactStatus.QUEUED))
        ).execute()
    notified = set(stopped) | ({replied.id} if replied else set())
    return [callbacks.emit_for_contact(contact_id, "opted_out", now=now) for contact_id in sorted(notified)]


def opted_out_phones(tenant_id: int, phones: list[str]) -> set[str]:
    """Which of ``phones`` opted out of the tenant (in chunks: SQLite limits
    the variables of one statement)."""
    found: set[str] = set()
    for start in range(0, len(phones), 500):
        chunk = phones[start:start + 500]
        found.update(o.phone for o in OptOut.select(OptOut.phone).where((OptOut.tenant == tenant_id) & OptOut.phone.in_(chunk)))
    return found
