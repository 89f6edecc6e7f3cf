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
the path parameters. The gateways' webhook envelopes are declared with their
providers (billing/adapters/providers/*: ``Webhook.body``).
"""
from __future__ import annotations

from datetime import datetime
from typing import Literal, Optional, Union
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from billing.adapters.providers.registry import drop_null_defaults
from billing.contacts import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from billing.domain.states import ContactStatus
from billing.domain.states import QueueStatus as QueueStates
from billing.schemas import MessageTypeName

QueueStatusName = Literal[QueueStates.ALL]  # type: ignore[valid-type]
ContactStatusName = Literal[ContactStatus.ALL]  # type: ignore[valid-type]
Timestamp = Optional[datetime]


#: An optional field here is one that may be absent, never null (the same
#: rule as the gateways' webhook bodies declared with their providers).
_no_null_defaults = drop_null_defaults


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
    checks: ReadinessChecks = Field(None, description="503 on /readyz: the state of each dependency.")


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


# --- inputs the views read by hand --------------------------------------------

class _Params(BaseModel):
    model_config = ConfigDict(json_schema_extra=_no_null_defaults, populate_by_name=True)


class SendPath(_Params):
    template_type: MessageTypeName = Field(description="The kind of message; each has its own template.")


class QueuePath(_Params):
    queue_id: UUID = Field(description="The queue_id returned by send.")


class CampaignPath(_Params):
    campaign_id: UUID = Field(description="The billing_campaign_id returned by send.")


class ContactsQuery(_Params):
    page: int = Field(1, ge=1, description="Page number, from 1.")
    page_size: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Contacts per page.")
    status: ContactStatusName = Field(None, description="Only contacts in this state.")


class WebhookPath(_Params):
    instance_id: int = Field(ge=0, description="The instance's id (in its webhook URL).")
    secret: str = Field(description="The instance's webhook secret (in its webhook URL).")


class WebhookEventPath(WebhookPath):
    event: str = Field(
        min_length=1, pattern="^[^/]+$",
        description="The event's name the gateway appends to the configured URL (Evolution's 'Webhook by Events': "
        "connection-update, messages-upsert, ...); the body's event decides.",
    )


class SignedWebhookPath(_Params):
    instance_id: int = Field(ge=0, description="The instance's id (in its webhook URL).")
