"""The tables. Every campaign, contact and state change is a row here.

The broker only carries ids; whatever the broker loses, these rows still say
what is left to do. Times are naive UTC (see :mod:`billing.clock`).
"""
from __future__ import annotations

import json
import uuid

import peewee

from billing.adapters.db import database
from billing.adapters.encryption import EncryptedField
from billing.clock import utcnow
from billing.domain.message_types import names as declared_type_names
from billing.domain.states import ContactStatus, QueueStatus

#: Default pace for a new WhatsApp instance (messages per minute).
DEFAULT_MESSAGES_PER_MINUTE = 20

#: Default number of send attempts before a contact ends ``failed``.
DEFAULT_MAX_ATTEMPTS = 3

#: Default requests per API key per hour.
DEFAULT_API_HOURLY_LIMIT = 1_000

#: Default tenant time zone.
DEFAULT_TIMEZONE = "America/Sao_Paulo"

#: Default weekly hours in which charges (overdue, upcoming) may be sent.
DEFAULT_BUSINESS_HOURS = "mon-fri 08:00-18:00, sat 08:00-12:00"

#: Default holiday calendar (Brazilian national holidays).
DEFAULT_HOLIDAYS = "BR"


class JSONField(peewee.TextField):
    """JSON kept as text, so SQLite and PostgreSQL store it the same way."""

    def db_value(self, value):
        if value is None:
            return None
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)

    def python_value(self, value):
        if value is None:
            return None
        return json.loads(value)


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


class Tenant(BaseModel):
    name = peewee.CharField(max_length=120, unique=True)
    timezone = peewee.CharField(max_length=64, default=DEFAULT_TIMEZONE)
    max_attempts = peewee.IntegerField(default=DEFAULT_MAX_ATTEMPTS)
    business_hours = peewee.CharField(max_length=500, default=DEFAULT_BUSINESS_HOURS)
    holidays = peewee.CharField(max_length=20, default=DEFAULT_HOLIDAYS)
    #: Tenant-specific closed dates (ISO strings).
    extra_holidays = JSONField(default=list)
    #: Read business hours in each recipient's own zone (from the phone's DDD).
    recipient_timezone = peewee.BooleanField(default=False)
    #: Messages per local day across all instances; 0 means no cap.
    daily_cap = peewee.IntegerField(default=0)
    #: Standard Webhooks secret (whsec_...) that signs the callbacks we send
    #: (encrypted at rest, as every secret below).
    callback_secret = EncryptedField(default="")
    #: Allow callback URLs on loopback/private/link-local addresses (SSRF guard off).
    allow_private_callbacks = peewee.BooleanField(default=False)
    #: Answer a "how do I pay" reply with the contact's PIX code or link.
    auto_reply = peewee.BooleanField(default=False)
    #: Requests per API key per hour (a key may set its own).
    api_hourly_limit = peewee.IntegerField(default=DEFAULT_API_HOURLY_LIMIT)
    #: Contacts accepted through the API per day; 0 means no limit.
    daily_message_limit = peewee.IntegerField(default=0)
    day_key = peewee.CharField(max_length=10, default="")
    day_count = peewee.IntegerField(default=0)
    settings = JSONField(default=dict)
    #: The operator's ceilings on the limits the tenant's admins set
    #: (billing.ceilings): {setting: highest value}; a setting absent here
    #: has the default ceiling.
    ceilings = JSONField(default=dict)
    created_at = peewee.DateTimeField(default=utcnow)


class ApiKey(BaseModel):
    """An ERP's credential. Only a hash of the secret is stored."""

    tenant = peewee.ForeignKeyField(Tenant, backref="api_keys", on_delete="CASCADE")
    name = peewee.CharField(max_length=120, default="")
    prefix = peewee.CharField(max_length=32, unique=True)
    key_hash = peewee.CharField(max_length=128)
    #: The message types the key may send, a JSON list; NULL: every declared
    #: type, including types declared after the key was made.
    message_types = JSONField(null=True)
    #: CIDRs the key may be used from; empty: anywhere.
    allowed_ips = JSONField(default=list)
    #: Requests per hour; 0: the tenant's default.
    hourly_limit = peewee.IntegerField(default=0)
    expires_at = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    last_used_at = peewee.DateTimeField(null=True)
    last_used_ip = peewee.CharField(max_length=64, default="")
    revoked_at = peewee.DateTimeField(null=True)

    @property
    def allowed_types(self) -> tuple[str, ...]:
        """The message types the key may send now."""
        if self.message_types is None:
            return declared_type_names()
        return tuple(self.message_types)


class AdminToken(BaseModel):
    """A tenant administrator's credential for the admin API (hash only)."""

    tenant = peewee.ForeignKeyField(Tenant, backref="admin_tokens", on_delete="CASCADE")
    name = peewee.CharField(max_length=120, default="")
    prefix = peewee.CharField(max_length=32, unique=True)
    key_hash = peewee.CharField(max_length=128)
    created_at = peewee.DateTimeField(default=utcnow)
    last_used_at = peewee.DateTimeField(null=True)
    revoked_at = peewee.DateTimeField(null=True)


class RateCounter(BaseModel):
    """A count within a time window, shared by every web process (requests per
    key per hour, messages per tenant per day)."""

    key = peewee.CharField(max_length=120)
    window_start = peewee.DateTimeField()
    count = peewee.IntegerField(default=0)

    class Meta:
        indexes = ((("key", "window_start"), True),)


class IdempotencyRecord(BaseModel):
    """The first answer to a POST sent with an Idempotency-Key, replayed to
    retries of the same request."""

    api_key = peewee.ForeignKeyField(ApiKey, on_delete="CASCADE")
    key = peewee.CharField(max_length=255)
    request_hash = peewee.CharField(max_length=64)
    status_code = peewee.IntegerField(null=True)  # None while the first request runs
    response_body = peewee.TextField(default="")
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("api_key", "key"), True),)


class Template(BaseModel):
    tenant = peewee.ForeignKeyField(Tenant, backref="templates", on_delete="CASCADE")
    type = peewee.CharField(max_length=20)
    name = peewee.CharField(max_length=120)
    strategy = peewee.CharField(max_length=20, default="random")
    is_active = peewee.BooleanField(default=True)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("tenant", "type", "name"), True),)


class Variation(BaseModel):
    template = peewee.ForeignKeyField(Template, backref="variations", on_delete="CASCADE")
    position = peewee.IntegerField(default=0)
    text = peewee.TextField()
    weight = peewee.IntegerField(default=1)
    times_used = peewee.IntegerField(default=0)
    is_active = peewee.BooleanField(default=True)


class Instance(BaseModel):
    """A WhatsApp number behind a gateway, with its own send pace."""

    tenant = peewee.ForeignKeyField(Tenant, backref="instances", on_delete="CASCADE")
    name = peewee.CharField(max_length=120)
    provider = peewee.CharField(max_length=20)
    url = peewee.CharField(max_length=500, default="")
    token = EncryptedField(default="")
    options = JSONField(default=dict)
    messages_per_minute = peewee.FloatField(default=DEFAULT_MESSAGES_PER_MINUTE)
    #: Bounds of the random gap between two sends (seconds); None: derived
    #: from messages_per_minute (see billing.pacing).
    min_interval = peewee.FloatField(null=True)
    max_interval = peewee.FloatField(null=True)
    #: A longer rest of rest_seconds after every rest_every messages (0: never).
    rest_every = peewee.IntegerField(default=0)
    rest_seconds = peewee.FloatField(default=0)
    #: Messages per local day; 0 means no cap.
    daily_cap = peewee.IntegerField(default=0)
    #: Days over which a new number's daily cap ramps up; 0 means no ramp.
    warmup_days = peewee.IntegerField(default=0)
    next_slot_at = peewee.DateTimeField(null=True)
    #: When the last message was handed to the gateway: a hard floor of
    #: min_interval between two sends, whatever the broker's timing.
    last_send_at = peewee.DateTimeField(null=True)
    sends_since_rest = peewee.IntegerField(default=0)
    day_key = peewee.CharField(max_length=10, default="")
    day_count = peewee.IntegerField(default=0)
    #: Authenticates the gateway's webhooks: in the URL path (Evolution) or
    #: as the HMAC key (WAHA).
    webhook_secret = EncryptedField(default="")
    health = peewee.CharField(max_length=20, default="unknown")
    #: Why the instance is down, in words an operator can act on ("" when up).
    health_reason = peewee.CharField(max_length=300, default="")
    health_checked_at = peewee.DateTimeField(null=True)
    #: Messages the gateway accepted on the local day ``sent_day`` (the daily
    #: caps book against day_count, which also holds booked, unsent slots).
    sent_day = peewee.CharField(max_length=10, default="")
    sent_count = peewee.IntegerField(default=0)
    is_active = peewee.BooleanField(default=True)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("tenant", "name"), True),)


class WhatsappNumber(BaseModel):
    """What a gateway said about a phone: on WhatsApp or not, and the chat id
    (JID) it resolved, which may lack a Brazilian mobile's 9. Checked once per
    tenant and phone, then reused for sends and for matching replies."""

    tenant = peewee.ForeignKeyField(Tenant, on_delete="CASCADE")
    phone = peewee.CharField(max_length=64)
    exists = peewee.BooleanField()
    chat_id = peewee.CharField(max_length=120, default="")
    checked_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("tenant", "phone"), True), (("tenant", "chat_id"), False))


class Campaign(BaseModel):
    id = peewee.UUIDField(primary_key=True, default=uuid.uuid4)
    tenant = peewee.ForeignKeyField(Tenant, backref="campaigns", on_delete="CASCADE")
    external_id = peewee.CharField(max_length=255)
    type = peewee.CharField(max_length=20)
    template = peewee.ForeignKeyField(Template, null=True, on_delete="SET NULL")
    callback_url = peewee.CharField(max_length=2000, default="")
    metadata = JSONField(default=dict)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("tenant", "external_id"), True),)


class Queue(BaseModel):
    """The sending run of one campaign. Counters are derived from its contacts."""

    id = peewee.UUIDField(primary_key=True, default=uuid.uuid4)
    campaign = peewee.ForeignKeyField(Campaign, backref="queues", unique=True, on_delete="CASCADE")
    tenant = peewee.ForeignKeyField(Tenant, on_delete="CASCADE")
    status = peewee.CharField(max_length=20, default=QueueStatus.PENDING, index=True)
    #: Who paused it: "manual" (the caller; only the caller resumes), "hours"
    #: and "instance" (the scheduler resumes on its own).
    pause_kind = peewee.CharField(max_length=20, default="")
    pause_reason = peewee.CharField(max_length=255, default="")
    resume_at = peewee.DateTimeField(null=True)
    #: When this queue's dispatch chain runs next (None: no chain). Keeps one
    #: chain per queue, and tells recovery a chain whose message was lost.
    next_dispatch_at = peewee.DateTimeField(null=True)
    total_contacts = peewee.IntegerField(default=0)
    rejected_contacts = peewee.IntegerField(default=0)
    created_at = peewee.DateTimeField(default=utcnow)
    started_at = peewee.DateTimeField(null=True)
    completed_at = peewee.DateTimeField(null=True)
    updated_at = peewee.DateTimeField(default=utcnow)


class Contact(BaseModel):
    """One customer of one campaign: what to send, and what became of it."""

    id = peewee.BigAutoField()
    queue = peewee.ForeignKeyField(Queue, backref="contacts", on_delete="CASCADE")
    campaign = peewee.ForeignKeyField(Campaign, backref="contacts", on_delete="CASCADE")
    tenant = peewee.ForeignKeyField(Tenant, on_delete="CASCADE")
    position = peewee.IntegerField()
    name = peewee.CharField(max_length=255, default="")
    phone = peewee.CharField(max_length=64)
    chat_id = peewee.CharField(max_length=120, default="")
    variables = JSONField(default=dict)
    message = peewee.TextField(default="")
    variation = peewee.ForeignKeyField(Variation, null=True, on_delete="SET NULL")
    status = peewee.CharField(max_length=20, default=ContactStatus.PENDING)
    attempts = peewee.IntegerField(default=0)
    reason = peewee.TextField(default="")
    instance = peewee.ForeignKeyField(Instance, null=True, on_delete="SET NULL")
    provider_message_id = peewee.CharField(max_length=255, default="")
    next_attempt_at = peewee.DateTimeField(null=True)
    slot_at = peewee.DateTimeField(null=True)
    #: When the broker message for the booked slot was published (None while
    #: booked but not yet handed to the broker: a dispatch that died between
    #: its commit and its publish left it, and recovery gives it back at once).
    enqueued_at = peewee.DateTimeField(null=True)
    claimed_at = peewee.DateTimeField(null=True)
    #: The worker process (billing.workers id) holding the ``sending`` claim;
    #: released as soon as that worker stops beating.
    claimed_by = peewee.CharField(max_length=120, default="", constraints=[peewee.SQL("DEFAULT ''")])
    # (Columns added after the first release carry a database default too:
    # ingest loads contacts with COPY, which knows nothing of peewee's.)
    #: A send went out and no answer came (timeout): before sending again the
    #: gateway is asked whether the message arrived.
    outcome_unknown = peewee.BooleanField(default=False, constraints=[peewee.SQL("DEFAULT FALSE")])
    sent_at = peewee.DateTimeField(null=True)
    delivered_at = peewee.DateTimeField(null=True)
    read_at = peewee.DateTimeField(null=True)
    finished_at = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = (
            (("queue", "status"), False),
            (("campaign", "position"), False),
            (("tenant", "phone"), False),
            (("provider_message_id",), False),
            # Recovery looks for the few contacts booked or in flight.
            (("status", "queue"), False),
        )


class Event(BaseModel):
    """The history of a contact: every state change, send and reply."""

    id = peewee.BigAutoField()
    contact = peewee.ForeignKeyField(Contact, backref="events", on_delete="CASCADE")
    kind = peewee.CharField(max_length=40)
    detail = JSONField(default=dict)
    created_at = peewee.DateTimeField(default=utcnow)


class InboundMessage(BaseModel):
    """A message a customer sent us, kept whether or not it matched a contact."""

    id = peewee.BigAutoField()
    tenant = peewee.ForeignKeyField(Tenant, on_delete="CASCADE")
    instance = peewee.ForeignKeyField(Instance, null=True, on_delete="SET NULL")
    provider_message_id = peewee.CharField(max_length=255)
    chat_id = peewee.CharField(max_length=120, default="")
    phone = peewee.CharField(max_length=64, default="")
    text = peewee.TextField(default="")
    intent = peewee.CharField(max_length=20, default="")
    contact = peewee.ForeignKeyField(Contact, null=True, on_delete="SET NULL")
    received_at = peewee.DateTimeField(default=utcnow)
    #: When the auto-reply went out (it goes at most once).
    answered_at = peewee.DateTimeField(null=True)
    #: When an auto-reply send was last claimed (a crashed one is claimable
    #: again after a while; a failed one is released at once).
    answer_claimed_at = peewee.DateTimeField(null=True)

    class Meta:
        # Gateways retry webhooks: the same message must be stored once.
        indexes = ((("instance", "provider_message_id"), True), (("tenant", "phone"), False))


class OptOut(BaseModel):
    """A phone that asked a tenant to stop: never sent to again until it opts back in."""

    tenant = peewee.ForeignKeyField(Tenant, on_delete="CASCADE")
    phone = peewee.CharField(max_length=64)
    reason = peewee.TextField(default="")
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("tenant", "phone"), True),)


class CallbackDelivery(BaseModel):
    """One event for the caller's callback_url, delivered until it is
    accepted, given up on, or its endpoint disabled. The row is written in the
    same transaction as the change it reports (an outbox), so no event is lost
    between a commit and the broker."""

    id = peewee.CharField(max_length=40, primary_key=True)  # the webhook-id, stable across retries
    tenant = peewee.ForeignKeyField(Tenant, on_delete="CASCADE")
    campaign = peewee.ForeignKeyField(Campaign, null=True, on_delete="CASCADE")
    url = peewee.CharField(max_length=2000)
    event = peewee.CharField(max_length=40)
    payload = JSONField(default=dict)
    status = peewee.CharField(max_length=20, default="pending")
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.DateTimeField(default=utcnow)
    last_status_code = peewee.IntegerField(null=True)
    last_error = peewee.TextField(default="")
    created_at = peewee.DateTimeField(default=utcnow)
    delivered_at = peewee.DateTimeField(null=True)

    class Meta:
        indexes = ((("status", "next_attempt_at"), False), (("tenant", "created_at"), False))


class CallbackAttempt(BaseModel):
    """Every try of a delivery, for ``billing callbacks show``."""

    id = peewee.BigAutoField()
    delivery = peewee.ForeignKeyField(CallbackDelivery, backref="tries", on_delete="CASCADE")
    attempted_at = peewee.DateTimeField(default=utcnow)
    status_code = peewee.IntegerField(null=True)
    error = peewee.TextField(default="")
    duration_ms = peewee.IntegerField(default=0)


class DisabledEndpoint(BaseModel):
    """A callback URL that answered 410 Gone: nothing more is sent to it."""

    tenant = peewee.ForeignKeyField(Tenant, on_delete="CASCADE")
    url = peewee.CharField(max_length=2000)
    disabled_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("tenant", "url"), True),)


class Heartbeat(BaseModel):
    """A running process (worker, scheduler, web) and the last time it said so.

    Claims name their worker; a worker whose beat is stale is dead, and its
    claims are released at once (see billing.workers).
    """

    id = peewee.CharField(max_length=120, primary_key=True)  # host:pid:random
    kind = peewee.CharField(max_length=20)
    hostname = peewee.CharField(max_length=255, default="")
    pid = peewee.IntegerField(default=0)
    started_at = peewee.DateTimeField(default=utcnow)
    beat_at = peewee.DateTimeField(default=utcnow, index=True)
    stopped_at = peewee.DateTimeField(null=True)
    #: Anything the process wants ops to see (threads, queues, leader...).
    info = JSONField(default=dict)


class WebhookDelivery(BaseModel):
    """A signed webhook event already received from an instance's gateway
    (its event id), so a replay of it applies nothing again; shared by every
    web process, old rows are deleted (billing.webhook_replays)."""

    instance = peewee.ForeignKeyField(Instance, on_delete="CASCADE")
    event_id = peewee.CharField(max_length=255)
    received_at = peewee.DateTimeField(default=utcnow, index=True)

    class Meta:
        indexes = ((("instance", "event_id"), True),)


class SandboxMessage(BaseModel):
    """What the ``sandbox`` gateway would have sent to WhatsApp."""

    id = peewee.BigAutoField()
    tenant = peewee.ForeignKeyField(Tenant, on_delete="CASCADE")
    instance = peewee.ForeignKeyField(Instance, null=True, on_delete="SET NULL")
    contact_id = peewee.BigIntegerField(null=True, index=True)
    phone = peewee.CharField(max_length=64)
    text = peewee.TextField()
    provider_message_id = peewee.CharField(max_length=64)
    sent_at = peewee.DateTimeField(default=utcnow)


#: Every table, in creation order (parents before children).
ALL_MODELS = (
    Tenant, ApiKey, AdminToken, RateCounter, IdempotencyRecord, Template, Variation, Instance, WhatsappNumber, Campaign, Queue,
    Contact, Event,
    InboundMessage, OptOut, CallbackDelivery, CallbackAttempt, DisabledEndpoint, Heartbeat, SandboxMessage,
    WebhookDelivery,
)
