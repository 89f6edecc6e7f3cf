"""What the gateways tell us: acks, connection changes and customers' replies.

Every handler is idempotent, because gateways retry webhooks (Evolution up to
10 times, WAHA 15): acks only move a contact forward (sent -> delivered ->
read), whatever order they arrive in; an inbound message is stored once per
gateway message id; a connection state is a state, not a toggle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import peewee
import structlog

from billing import callbacks, health, transitions
from billing.adapters.db import write_transaction
from billing.adapters.models import Contact, Event, InboundMessage, Instance, OptOut, Tenant, WhatsappNumber
from billing.adapters.providers import gateway_for
from billing.adapters.providers.base import (
    ACK_DELIVERED,
    ACK_FAILED,
    ACK_READ,
    AckEvent,
    ConnectionEvent,
    Gateway,
    GatewayError,
    LookupUnavailable,
    SendResult,
)
from billing.adapters.providers.base import InboundMessage as InboundEvent
from billing.clock import utcnow
from billing.domain import replies
from billing.domain.states import ContactStatus

log = structlog.get_logger(__name__)

#: Intent recorded when a customer asks to receive messages again.
OPT_IN = "opt_in"

#: The contact's reason when a phone opted out.
OPTED_OUT_REASON = "opted out"

#: An auto-reply claimed longer ago than this belonged to a worker that died
#: mid-send: another may take it (a send answers within ~20 s or fails).
AUTO_REPLY_CLAIM_TIMEOUT = timedelta(minutes=2)
#: Event kinds of the auto-reply's history (on the contact).
AUTO_REPLY_EVENT = "auto_reply"
AUTO_REPLY_ERROR_EVENT = "auto_reply_error"

#: The transition each ack makes (acks only move forward; see
#: billing.transitions), and the time column it stamps.
ACK_MOVES = {
    ACK_DELIVERED: (transitions.ACK_DELIVERED, "delivered_at"),
    ACK_READ: (transitions.ACK_READ, "read_at"),
    ACK_FAILED: (transitions.ACK_FAILED, "finished_at"),
}

#: The contact's reason when the gateway reports a delivery error.
DELIVERY_ERROR_REASON = "the gateway reported a delivery error"

#: The ids of a customer's message and the columns that store them (an id
#: longer than its column drops the message, see _fits).
INBOUND_ID_COLUMNS = {
    "provider_message_id": InboundMessage.provider_message_id,
    "chat_id": InboundMessage.chat_id,
    "phone": InboundMessage.phone,
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
            handled.resumed_queues += health.record_state(instance.id, event.state, reason=event.reason, now=now)
        elif isinstance(event, InboundEvent):
            if not _fits(event):
                continue
            deliveries, answer = record_reply(instance, event, now=now)
            handled.callbacks += deliveries
            handled.auto_replies += [answer] if answer else []
    return handled


def _fits(event: InboundEvent) -> bool:
    """Whether a customer's message has ids that fit their columns. One that
    does not (a message id of thousands of characters) is no WhatsApp
    message: it is dropped with a warning line, not cut, since a cut id could
    match another message's."""
    too_long = [
        name for name, column in INBOUND_ID_COLUMNS.items() if len(getattr(event, name) or "") > column.max_length
    ]
    if too_long:
        log.warning("inbound message dropped: ids longer than their columns", fields=too_long)
    return not too_long


def apply_ack(instance: Instance, event: AckEvent, *, now: datetime) -> list[str]:
    move = ACK_MOVES.get(event.status)
    if move is None or not event.provider_message_id:
        return []
    transition, stamp = move
    with write_transaction():
        contact = Contact.get_or_none(
            (Contact.provider_message_id == event.provider_message_id) & (Contact.tenant == instance.tenant_id)
        )
        if contact is None:
            return []
        fields = {stamp: now}
        if transition is transitions.ACK_READ and contact.delivered_at is None:
            fields["delivered_at"] = now  # a read message was delivered, even if that ack never came
        if transition is transitions.ACK_FAILED:
            fields["reason"] = DELIVERY_ERROR_REASON
        moved = transitions.move_contacts(transition, Contact.id == contact.id, now=now,
                                          detail={"provider_message_id": event.provider_message_id}, **fields)
    return moved.callbacks


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

    The answer is claimed (``answer_claimed_at``) before the send and marked
    ``answered_at`` only after the gateway accepted it; a failed send releases
    the claim, so the caller's retry sends it. A claim older than
    :data:`AUTO_REPLY_CLAIM_TIMEOUT` (its worker died) may be taken again.
    After an ambiguous failure (no answer from the gateway) the retry first
    asks the gateway whether the answer went out, and does not send it twice.

    Parameters:
      inbound_id: the customer's message being answered.
      now: the time of this attempt (naive UTC); default now.

    Returns:
      True when the answer was sent (or found sent) now; False when there is
      nothing to send or it was already answered or is being answered.

    Raises:
      GatewayError: the gateway failed; the claim is released (the caller retries transient ones).
    """
    now = now or utcnow()
    message = InboundMessage.get_or_none(InboundMessage.id == inbound_id)
    if message is None or message.contact_id is None or message.instance_id is None or message.answered_at:
        return False
    contact = Contact.get_by_id(message.contact_id)
    text = payment_details(contact)
    if not text:
        return False
    claimable = InboundMessage.answer_claimed_at.is_null() | (
        InboundMessage.answer_claimed_at < now - AUTO_REPLY_CLAIM_TIMEOUT
    )
    claimed = InboundMessage.update(answer_claimed_at=now).where(
        (InboundMessage.id == inbound_id) & InboundMessage.answered_at.is_null() & claimable
    ).execute()
    if not claimed:
        return False  # answered, or another worker is sending it
    gateway = gateway_for(Instance.get_by_id(message.instance_id))
    chat_id = message.chat_id or contact.chat_id
    try:
        result = _already_sent(gateway, inbound_id=inbound_id, contact_id=contact.id, chat_id=chat_id, text=text)
        result = result or gateway.send_text(phone=contact.phone, chat_id=chat_id, text=text, contact_id=contact.id)
    except BaseException as exc:
        try:
            _release_claim(inbound_id, claimed_at=now, contact_id=contact.id, error=exc)
        except Exception as release_error:  # the database may be why the send failed: the claim times out instead
            log.warning("auto-reply claim not released", inbound_id=inbound_id, error=type(release_error).__name__)
        raise
    with write_transaction():
        InboundMessage.update(answered_at=utcnow()).where(
            (InboundMessage.id == inbound_id) & InboundMessage.answered_at.is_null()
        ).execute()
        Event.create(contact=contact.id, kind=AUTO_REPLY_EVENT, created_at=utcnow(),
                     detail={"inbound_id": inbound_id, "provider_message_id": result.provider_message_id})
    return True


#: Recovery answers payment questions whose auto-reply was never handed to
#: the broker (it was down when the webhook came) for this long after they came.
AUTO_REPLY_RECOVERY_WINDOW = timedelta(hours=1)

#: ...and only once they are this old (the webhook's own enqueue goes first).
AUTO_REPLY_RECOVERY_DELAY = timedelta(seconds=30)


def unanswered_questions(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Payment questions of auto-replying tenants that nobody answered or is
    answering: their enqueue was lost (the broker was down). Returns inbound ids."""
    now = now or utcnow()
    auto = Tenant.select(Tenant.id).where(Tenant.auto_reply == True)  # noqa: E712
    return [
        row_id
        for (row_id,) in InboundMessage.select(InboundMessage.id)
        .where(
            (InboundMessage.intent == replies.QUESTION)
            & InboundMessage.answered_at.is_null()
            & InboundMessage.answer_claimed_at.is_null()
            & InboundMessage.contact.is_null(False)
            & InboundMessage.received_at.between(now - AUTO_REPLY_RECOVERY_WINDOW, now - AUTO_REPLY_RECOVERY_DELAY)
            & InboundMessage.tenant.in_(auto)
        )
        .order_by(InboundMessage.id)
        .limit(limit)
        .tuples()
    ]


def _release_claim(inbound_id: int, *, claimed_at: datetime, contact_id: int, error: BaseException) -> None:
    """Give the auto-reply back after a failed send (only our own claim), and
    remember an ambiguous failure so the retry checks before sending."""
    ambiguous = isinstance(error, GatewayError) and error.ambiguous
    permanent = isinstance(error, GatewayError) and not error.transient
    with write_transaction():
        if not permanent:  # a permanent failure keeps its claim: recovery does not try it again
            InboundMessage.update(answer_claimed_at=None).where(
                (InboundMessage.id == inbound_id) & (InboundMessage.answer_claimed_at == claimed_at)
            ).execute()
        if isinstance(error, GatewayError):
            Event.create(contact=contact_id, kind=AUTO_REPLY_ERROR_EVENT, created_at=utcnow(),
                         detail={"inbound_id": inbound_id, "reason": error.reason, "ambiguous": ambiguous,
                                 "since": claimed_at.isoformat()})


def _already_sent(gateway: Gateway, *, inbound_id: int, contact_id: int, chat_id: str, text: str) -> SendResult | None:
    """The auto-reply the gateway shows as sent by an earlier ambiguous
    attempt, or None (no such attempt, not found, or the gateway cannot tell:
    then it is sent again, which is preferred to never)."""
    earlier = (
        Event.select(Event.detail)
        .where((Event.contact == contact_id) & (Event.kind == AUTO_REPLY_ERROR_EVENT))
        .order_by(Event.id)
    )
    starts = [
        e.detail["since"] for e in earlier
        if isinstance(e.detail, dict) and e.detail.get("inbound_id") == inbound_id and e.detail.get("ambiguous")
    ]
    if not starts or not chat_id:
        return None
    try:
        return gateway.find_sent(chat_id=chat_id, text=text, since=datetime.fromisoformat(starts[0]))
    except LookupUnavailable as exc:
        log.info("auto-reply resent unchecked", inbound_id=inbound_id, reason=exc.reason)
        return None


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
        transitions.move_contacts(transitions.OPT_OUT, Contact.id.in_(stopped), now=now, reason=OPTED_OUT_REASON)
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
