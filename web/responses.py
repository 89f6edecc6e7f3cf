"""What the routes of web/api.py and web/webhooks.py answer, as pydantic models.

These classes only document: the views build their answers with ``jsonify``
from billing/ (``queues.queue_status()``, ``contacts.list_contacts()``...).
tests/integration/test_openapi.py validates real answers against the JSON
Schema generated from these models, and the fuzz test validates every answer it
gets, so a field added, removed or retyped in billing/ without a change here
fails a test instead of drifting silently. Every model forbids extra fields for
the same reason.

The module also holds the few *inputs* that billing/schemas.py does not model
because the views read them by hand: the query string of the contacts list and
the path parameters, and the gateways' webhook envelopes (which are accepted
whatever they hold: they are documented so callers and the fuzzer know the
events that do something).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Optional, Union
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from billing.contacts import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from billing.domain.states import ContactStatus, QueueStatus as QueueStates, TemplateType

QueueStatusName = Literal[QueueStates.ALL]  # type: ignore[valid-type]
ContactStatusName = Literal[ContactStatus.ALL]  # type: ignore[valid-type]
TemplateTypeName = Literal[TemplateType.ALL]  # type: ignore[valid-type]
Timestamp = Optional[datetime]


def _no_null_defaults(schema: dict, model: type) -> None:
    """An optional field here is one that may be absent, never null: drop the
    ``default: null`` pydantic writes for it."""
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] is None:
            del prop["default"]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_no_null_defaults)


# --- errors ------------------------------------------------------------------

class FieldError(_Answer):
    """One problem with the request body."""

    field: str = Field(description="Where: a field name, a dotted path such as contacts.0.telefone, or body.")
    message: str = Field(description="What is wrong with it.")
    index: int = Field(None, description="The contact's position in contacts (0-based), when the problem is in a contact.")


class Rejected(_Answer):
    """A contact that was not queued, and why."""

    index: int = Field(description="The contact's position in the request's contacts (0-based).")
    telefone: str = Field(description="The phone as sent.")
    reason: str = Field(description="Why it was rejected (invalid phone, duplicate, missing variable...).")


class Error(_Answer):
    """Every error answer: never an HTML page, never a stack trace."""

    success: Literal[False] = Field(description="Always false on an error.")
    message: str = Field(description="One readable sentence about what went wrong.")
    errors: list[Union[FieldError, Rejected]] = Field(
        None,
        description="Details, when there are several problems: {field, message, index?} for a body that does not "
        "validate; {index, telefone, reason} when no contact could be sent.",
    )
    billing_campaign_id: UUID = Field(None, description="409 on send: the campaign that already has this external_id.")
    queue_id: UUID = Field(None, description="409 on send: that campaign's queue.")
    checks: "ReadinessChecks" = Field(None, description="503 on /readyz: the state of each dependency.")


# --- the ERP API -------------------------------------------------------------

class SendResponse(_Answer):
    """A campaign was created and its queue handed to the workers."""

    success: Literal[True] = Field(description="Always true on success.")
    message: str = Field(description="A human-readable confirmation (Portuguese).")
    billing_campaign_id: UUID = Field(description="The new campaign.")
    queue_id: UUID = Field(description="Its queue: poll queue/{queue_id}/status for progress.")
    total_contacts: int = Field(ge=0, description="Contacts accepted for sending.")
    rejected_contacts: int = Field(ge=0, description="Contacts rejected (invalid phone, duplicate, missing variable...).")
    rejected: list[Rejected] = Field(description="The rejected contacts with their reasons (at most the first 100).")
    estimated_duration_minutes: Optional[int] = Field(
        description="Minutes until the last message is sent, at the tenant's pace, inside its business hours and "
        "holidays; null when the calendar never opens."
    )


class QueueStatus(_Answer):
    """A queue's progress. The counters come from the contacts' states."""

    success: Literal[True] = Field(description="Always true on success.")
    id: UUID = Field(description="The queue.")
    billing_campaign_id: UUID = Field(description="Its campaign.")
    status: QueueStatusName = Field(description="The queue's state.")
    status_display: str = Field(description="The state for people (Portuguese).")
    total_contacts: int = Field(ge=0, description="Contacts accepted for sending.")
    contacts_sent: int = Field(ge=0, description="Handed to WhatsApp (sent, delivered or read).")
    contacts_delivered: int = Field(ge=0, description="Delivered to the phone (delivered or read).")
    contacts_read: int = Field(ge=0, description="Read by the customer.")
    contacts_failed: int = Field(ge=0, description="Failed after every attempt.")
    contacts_pending: int = Field(ge=0, description="Not sent yet (pending, scheduled or sending).")
    contacts_pending_retry: int = Field(ge=0, description="Not sent yet, after at least one failed attempt.")
    contacts_stalled: int = Field(
        ge=0, description="Open contacts that should be moving and are not (a booking long past its slot, a claim "
        "held by a worker that stopped): recovery releases them."
    )
    contacts_cancelled: int = Field(ge=0, description="Cancelled before being sent.")
    contacts_opted_out: int = Field(ge=0, description="Skipped: the customer asked not to be contacted.")
    contacts_rejected: int = Field(ge=0, description="Rejected when the campaign was created.")
    progress_percent: float = Field(ge=0, le=100, description="Share of the accepted contacts that are done.")
    current_rate: float = Field(ge=0, description="Messages per minute actually sent over the last five minutes.")
    eta: Timestamp = Field(
        description="When the open contacts should all be sent (UTC); null when done, paused by the caller, or unknown."
    )
    created_at: Timestamp = Field(description="When the queue was created (UTC).")
    started_at: Timestamp = Field(description="When its first message was sent (UTC).")
    completed_at: Timestamp = Field(description="When it completed or was cancelled (UTC).")
    pause_reason: str = Field(description="Why it is paused; empty when it is not.")
    resume_at: Timestamp = Field(description="When an automatic pause ends (closed hours, daily cap...), UTC.")


class ControlResponse(QueueStatus):
    """The queue's status after the action."""

    action: Literal["pause", "resume", "cancel"] = Field(description="The action asked for.")
    changed: bool = Field(description="False when the queue was already in the asked state.")
    message: str = Field(description="What happened, for people (Portuguese).")


class ContactView(_Answer):
    """One contact of a campaign and what became of it."""

    id: int = Field(description="The contact's id.")
    index: int = Field(ge=0, description="Its position in the send request's contacts (0-based).")
    nome: str = Field(description="The customer's name (empty when none was sent).")
    telefone: str = Field(description="The phone, normalized to E.164 when it was valid.")
    status: ContactStatusName = Field(description="The contact's state.")
    status_display: str = Field(description="The state for people (Portuguese).")
    reason: str = Field(description="Why it failed, was rejected or skipped; empty otherwise.")
    attempts: int = Field(ge=0, description="Send attempts so far.")
    message: str = Field(description="The rendered message (empty when rejected).")
    variation_id: Optional[int] = Field(description="The template variation used; null when rejected.")
    provider_message_id: str = Field(description="The gateway's message id once sent; empty before.")
    sent_at: Timestamp = Field(description="When it was handed to WhatsApp (UTC).")
    delivered_at: Timestamp = Field(description="When it reached the phone (UTC).")
    read_at: Timestamp = Field(description="When it was read (UTC).")
    finished_at: Timestamp = Field(description="When it reached a final state (UTC).")


class ContactsPage(_Answer):
    """One page of a campaign's contacts, in request order."""

    success: Literal[True] = Field(description="Always true on success.")
    billing_campaign_id: UUID = Field(description="The campaign.")
    external_id: str = Field(description="The caller's id of the campaign.")
    queue_id: Optional[UUID] = Field(description="The campaign's queue.")
    count: int = Field(ge=0, description="Contacts matching the filter, over every page.")
    page: int = Field(ge=1, description="This page's number (1-based).")
    page_size: int = Field(ge=1, le=MAX_PAGE_SIZE, description="Contacts per page.")
    pages: int = Field(ge=0, description="How many pages there are.")
    results: list[ContactView] = Field(description="This page's contacts.")


# --- probes ------------------------------------------------------------------

class Liveness(_Answer):
    """The process answers."""

    status: Literal["ok"] = Field(description="Always ok.")


class ReadinessChecks(_Answer):
    """What each dependency said: ``ok`` or what is wrong with it."""

    database: str = Field(description="ok, unavailable, or schema not upgraded (run `billing db upgrade`).")
    broker: str = Field(description="ok or unreachable (the embedded broker is always ok).")


class Readiness(_Answer):
    """The database and the broker answer: the process can take work."""

    success: Literal[True] = Field(description="Always true when ready.")
    status: Literal["ok"] = Field(description="Always ok when ready.")
    checks: ReadinessChecks


# --- webhooks ----------------------------------------------------------------

class WebhookAck(_Answer):
    """The webhook was received. A body that is not understood is acknowledged
    too (with events 0), so the gateway does not retry it forever."""

    success: Literal[True] = Field(description="Always true: the gateway need not retry.")
    events: int = Field(ge=0, description="Events acted on (acks, replies, connection changes).")


class _Open(BaseModel):
    """Gateways send more than we read: extra fields are allowed and ignored."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_no_null_defaults)


class EvolutionKey(_Open):
    remoteJid: str = Field(None, description="The chat: <digits>@s.whatsapp.net for a person.")
    fromMe: bool = Field(None, description="True for the messages we sent.")
    id: str = Field(None, description="The message id.")


class EvolutionMessage(_Open):
    conversation: str = Field(None, description="The text of a plain message.")


class EvolutionData(_Open):
    key: EvolutionKey = Field(None, description="messages.upsert: which message.")
    message: EvolutionMessage = Field(None, description="messages.upsert: its content.")
    keyId: str = Field(None, description="messages.update: the message id.")
    fromMe: bool = Field(None, description="messages.update: whether we sent the message.")
    status: Union[str, int] = Field(
        None, description="messages.update: SERVER_ACK, DELIVERY_ACK, READ, PLAYED, ERROR (or their codes 0-5)."
    )
    state: str = Field(None, description="connection.update: open, connecting, close or refused.")


class EvolutionWebhook(_Open):
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


class WahaPayload(_Open):
    id: str = Field(None, description="The message id.")
    fromMe: bool = Field(None, description="True for the messages we sent.")
    to: str = Field(None, description="message.ack: the recipient.")
    body: str = Field(None, description="message: the text.")
    ack: int = Field(None, description="message.ack: -1 error, 1 server, 2 device, 3 read, 4 played.")
    ackName: str = Field(None, description="message.ack: ERROR, PENDING, SERVER, DEVICE, READ, PLAYED.")
    status: str = Field(None, description="session.status: WORKING, STARTING, SCAN_QR_CODE, STOPPED, FAILED.")
    # "from" is a keyword: declared through an alias.
    from_: str = Field(None, alias="from", description="message: the sender, <digits>@c.us for a person.")


class WahaWebhook(_Open):
    """The envelope WAHA posts for each event."""

    id: str = Field(None, description="The event id (WAHA Plus; Core 2024.10 sends none).")
    event: Literal["message", "message.any", "message.ack", "session.status"] = Field(
        None, description="The event; others are acknowledged and ignored."
    )
    session: str = Field(
        None, description="The WAHA session name: must be the session this URL's instance uses (else 403)."
    )
    payload: WahaPayload = Field(None, description="The event's data.")


# --- inputs the views read by hand --------------------------------------------

class _Params(BaseModel):
    model_config = ConfigDict(json_schema_extra=_no_null_defaults, populate_by_name=True)


class SendPath(_Params):
    template_type: TemplateTypeName = Field(description="The kind of message; each has its own template.")


class QueuePath(_Params):
    queue_id: UUID = Field(description="The queue_id returned by send.")


class CampaignPath(_Params):
    campaign_id: UUID = Field(description="The billing_campaign_id returned by send.")


class ContactsQuery(_Params):
    page: int = Field(1, ge=1, description="Page number, from 1.")
    page_size: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Contacts per page.")
    status: ContactStatusName = Field(None, description="Only contacts in this state.")


class EvolutionPath(_Params):
    instance_id: int = Field(ge=0, description="The instance's id (in its webhook URL).")
    secret: str = Field(description="The instance's webhook secret (in its webhook URL).")


class EvolutionEventPath(EvolutionPath):
    event: str = Field(
        min_length=1, pattern="^[^/]+$",
        description="With 'Webhook by Events' on, the event's name Evolution appends (connection-update, "
        "messages-upsert, messages-update, ...); the body's event decides.",
    )


class WahaPath(_Params):
    instance_id: int = Field(ge=0, description="The instance's id (in its webhook URL).")


class WahaSecretPath(_Params):
    instance_id: int = Field(ge=0, description="The instance's id (in its webhook URL).")
    secret: str = Field(description="The instance's webhook secret (in its webhook URL).")


class WahaSecretHeaders(_Params):
    x_webhook_hmac: str = Field(
        None, alias="X-Webhook-Hmac",
        description="Hex HMAC-SHA512 of the raw body, keyed with the instance's webhook secret: verified when sent "
        "(WAHA Plus), required when the instance's options set require_hmac. WAHA Core sends none.",
    )
    x_webhook_hmac_algorithm: Literal["sha512"] = Field(
        None, alias="X-Webhook-Hmac-Algorithm", description="sha512 when sent."
    )


class WahaHeaders(_Params):
    x_webhook_hmac: str = Field(
        alias="X-Webhook-Hmac",
        description="Hex HMAC-SHA512 of the raw body, keyed with the instance's webhook secret.",
    )
    x_webhook_hmac_algorithm: Literal["sha512"] = Field(
        None, alias="X-Webhook-Hmac-Algorithm", description="sha512 when sent."
    )
