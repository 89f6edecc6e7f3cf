"""Turning a caller's batch of invoices into a campaign, its queue and contacts.

Everything is validated and rendered in one pass over the contacts, then
written in ONE transaction with a bulk load, so a request either creates the
whole campaign or nothing. The caller enqueues ``dispatch(queue_id)`` after
this returns (the commit has happened by then).
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

import peewee

from billing import callbacks, limits, pacing, windows
from billing.adapters.db import database, is_postgres, write_transaction
from billing.adapters.models import Campaign, Contact, Queue, Tenant, Variation
from billing.clock import utcnow
from billing.domain import message_types
from billing.domain.duedates import InvalidDate, due_variables, parse_date, today_in, type_contradiction
from billing.domain.money import InvalidAmount, format_brl
from billing.domain.phones import InvalidPhone, normalize_phone
from billing.domain.rotation import VariationPicker
from billing.domain.states import ContactStatus
from billing.domain.templating import MessageTooLong, MissingVariable, compile_template, sanitize_value
from billing.errors import DuplicateCampaign, InvalidRequest, PayloadTooLarge
from billing.inbound import OPTED_OUT_REASON, opted_out_phones
from billing.schemas import SendRequest, parse
from billing.templates import active_template, active_variations, check_type

#: How many rejected contacts the send response lists in full; the rest are
#: counted there and listed by ``GET campaign/<id>/contacts?status=rejected``.
MAX_REJECTED_IN_RESPONSE = 100

#: Rows per INSERT on SQLite (its statement has a bound-variable limit).
SQLITE_INSERT_BATCH = 400

#: Amount fields formatted as R$ when given as numbers.
MONEY_FIELDS = ("valor", "valor_total")

#: Amount text that reads as a negative number: "-150,00", "R$ -150,00",
#: "-R$ 150,00" (an ASCII hyphen or the Unicode minus sign).
NEGATIVE_AMOUNT_TEXT = re.compile(r"^(?:R\$\s*)?[-\u2212]\s*(?:R\$\s*)?\d")

#: Amount text that names no finite number (what a NaN or infinity turns into
#: when an ERP writes it as text).
NON_FINITE_AMOUNT_TEXT = frozenset({"nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})

#: Fields written at creation, in this order, by both bulk loaders. Columns
#: without a value here take none from the database either (COPY writes NULL):
#: every NOT NULL column is listed.
INSERT_FIELDS = (
    Contact.queue, Contact.campaign, Contact.tenant, Contact.position, Contact.name, Contact.phone,
    Contact.chat_id, Contact.variables, Contact.message, Contact.variation, Contact.status,
    Contact.attempts, Contact.reason, Contact.provider_message_id, Contact.finished_at,
    Contact.created_at, Contact.updated_at, Contact.claimed_by, Contact.outcome_unknown,
)



@dataclass
class Rejection:
    index: int
    telefone: str
    reason: str

    def as_dict(self) -> dict:
        return {"index": self.index, "telefone": self.telefone, "reason": self.reason}


@dataclass
class CampaignCreated:
    """What a successful send request created."""

    campaign_id: str
    queue_id: str
    total_contacts: int
    rejected: list[Rejection] = field(default_factory=list)
    estimated_duration_minutes: int = 0


def template_variables(contact: dict, *, today) -> dict:
    """The variables a template sees for one contact.

    Adds ``nome_cliente``/``nome`` (either may be given), the due-date
    variables, and R$ formatting of numeric amounts.

    Raises:
      InvalidDate: when ``data_vencimento`` is not a real date.
    """
    values = {key: value for key, value in contact.items() if value is not None}
    name = values.get("nome_cliente") or values.get("nome") or ""
    values["nome_cliente"] = values["nome"] = name
    for key in MONEY_FIELDS:
        if key in values:
            values[key] = format_brl(values[key])
    if values.get("data_vencimento"):
        due = parse_date(values["data_vencimento"])
        values["data_vencimento"] = due.strftime("%d/%m/%Y")
        values["data_vencimento_iso"] = due.isoformat()
        values.update(due_variables(due, today=today))
    return values


class _Renderer:
    """Renders a contact with the variation the picker chooses; falls back to
    another variation when the chosen one needs a variable the contact lacks."""

    def __init__(self, variations: list[Variation], *, strategy: str) -> None:
        self.variations = variations
        self.compiled = {v.id: compile_template(v.text) for v in variations}
        self.picker = VariationPicker(variations, strategy=strategy)

    def render(self, values: dict) -> tuple[Variation, str]:
        """The chosen variation and its message.

        Raises:
          MissingVariable: no variation can render without a missing variable.
          MessageTooLong: the chosen variation's message would pass
            MAX_MESSAGE_LENGTH (the contact is rejected; no other is tried:
            the values, not the wording, are at fault).
        """
        chosen = self.picker.pick()
        try:
            return chosen, self.compiled[chosen.id].render(values)
        except MessageTooLong:
            self.picker.usage[chosen.id] -= 1
            raise
        except MissingVariable as first_missing:
            for other in self.variations:
                if other.id == chosen.id:
                    continue
                try:
                    message = self.compiled[other.id].render(values)
                except (MissingVariable, MessageTooLong):
                    continue
                self.picker.usage[chosen.id] -= 1
                self.picker.usage[other.id] = self.picker.usage.get(other.id, 0) + 1
                return other, message
            self.picker.usage[chosen.id] -= 1
            raise first_missing


def create_campaign(
    tenant: Tenant,
    *,
    template_type: str,
    request: dict | SendRequest,
    max_contacts: int | None = None,
    now: datetime | None = None,
) -> CampaignCreated:
    """Validate, render and store a campaign with its queue and contacts.

    Parameters:
      tenant: the sender.
      template_type: a declared message type (billing/domain/message_types.py).
      request: the send body (seed format), as a dict or a parsed SendRequest.
      max_contacts: reject larger batches (None: no limit).
      now: creation time (tests).

    Raises:
      InvalidRequest: malformed body, no active template, or no contact sendable.
      DuplicateCampaign: the external_id exists; nothing was created.
    """
    check_type(template_type)
    if isinstance(request, dict) and isinstance(request.get("contacts"), list):
        # Counted before any contact is validated: the work spent on a refusal
        # stays bounded by the limit, not by the size of the batch.
        _check_count(len(request["contacts"]), max_contacts=max_contacts)
    body = parse(SendRequest, request)
    if body.template_type and body.template_type != template_type:
        raise InvalidRequest(
            f"template_type '{body.template_type}' does not match the endpoint's '{template_type}'"
        )
    _check_count(len(body.contacts), max_contacts=max_contacts)
    _raise_if_duplicate(tenant, body.external_id)
    template = active_template(tenant.id, template_type)
    variations = active_variations(template) if template else []
    if not variations:
        raise InvalidRequest(f"tenant has no active '{template_type}' template with variations")

    if body.callback_url:
        callbacks.check_url(body.callback_url, allow_private=tenant.allow_private_callbacks)
    now = now or utcnow()
    renderer = _Renderer(variations, strategy=template.strategy)
    today = today_in(tenant.timezone, now=now)
    rows, rejected = _render_contacts(body, template_type=template_type, renderer=renderer, today=today, now=now)
    rows = _mark_opted_out(tenant.id, rows, now=now)
    accepted = len(rows) - len(rejected)
    if accepted == 0:
        raise InvalidRequest(
            "no contact can be sent", errors=[r.as_dict() for r in rejected[:MAX_REJECTED_IN_RESPONSE]]
        )

    try:
        with write_transaction():
            if tenant.daily_message_limit:
                # Counted with the campaign: a rejected request uses none of it.
                limits.consume(
                    f"tenant:{tenant.id}:messages", amount=accepted, limit=tenant.daily_message_limit,
                    window=limits.day_window(tenant.timezone, now), now=now, what="daily messages",
                )
            campaign = Campaign.create(
                tenant=tenant, external_id=body.external_id, type=template_type, template=template,
                callback_url=body.callback_url or "", metadata=body.metadata or {}, created_at=now,
            )
            queue = Queue.create(
                campaign=campaign, tenant=tenant, total_contacts=accepted, rejected_contacts=len(rejected),
                created_at=now, updated_at=now,
            )
            _bulk_insert(rows, queue_id=str(queue.id), campaign_id=str(campaign.id), tenant_id=tenant.id)
            for variation_id, used in renderer.picker.usage.items():
                if used:
                    Variation.update(times_used=Variation.times_used + used).where(Variation.id == variation_id).execute()
    except peewee.IntegrityError:
        # Another request with the same external_id committed first.
        _raise_if_duplicate(tenant, body.external_id)
        raise

    return CampaignCreated(
        campaign_id=str(campaign.id),
        queue_id=str(queue.id),
        total_contacts=accepted,
        rejected=rejected,
        estimated_duration_minutes=estimate_minutes(tenant, template_type, contacts=accepted, now=now),
    )


def _check_count(count: int, *, max_contacts: int | None) -> None:
    """Refuse a batch of more than ``max_contacts`` contacts (None: no limit).

    Raises:
      PayloadTooLarge: the batch is larger.
    """
    if max_contacts is not None and count > max_contacts:
        raise PayloadTooLarge(f"at most {max_contacts} contacts per request, got {count}")


def estimate_minutes(tenant: Tenant, template_type: str, *, contacts: int, now: datetime) -> int | None:
    """Minutes until ``contacts`` messages are sent at the tenant's pace, closed
    hours and holidays included (None: the calendar never opens)."""
    seconds = pacing.sending_seconds(tenant.id, contacts)
    finish = windows.finish_time(tenant, template_type, seconds=seconds, now=now)
    if finish is None:
        return None
    return pacing.minutes((finish - now).total_seconds())


def _raise_if_duplicate(tenant: Tenant, external_id: str) -> None:
    existing = (
        Queue.select(Queue.id, Queue.campaign)
        .join(Campaign)
        .where((Campaign.tenant == tenant.id) & (Campaign.external_id == external_id))
        .first()
    )
    if existing is not None:
        raise DuplicateCampaign(
            external_id=external_id, campaign_id=str(existing.campaign_id), queue_id=str(existing.id)
        )


def amount_problem(name: str, value) -> str | None:
    """Why ``value`` cannot be the amount of a bill, or None.

    A bill is never negative and always a finite number. A number is checked
    as such; text is kept as written, so only text that plainly reads as a
    negative or non-finite number is refused.

    Parameters:
      name: the field (``valor``, ``valor_total``), named in the reason.
      value: the amount as the caller sent it (number, text or None).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in NON_FINITE_AMOUNT_TEXT:
            return f"{name} is not a finite number"
        if NEGATIVE_AMOUNT_TEXT.match(text):
            return f"{name} is negative ({text})"
        return None
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return f"{name} is not a number"
    if not amount.is_finite():
        return f"{name} is not a finite number"
    if amount < 0:
        return f"{name} is negative ({value})"
    return None


def _render_contacts(body: SendRequest, *, template_type: str, renderer: _Renderer, today, now
                     ) -> tuple[list[tuple], list[Rejection]]:
    """One pass: normalize, deduplicate, check, enrich, render. Returns the
    rows to insert (accepted and rejected alike: a rejection is never silently
    dropped) and the rejections.

    Besides an unusable phone, date or template variable, a contact is
    rejected when it lacks a variable its message type requires, whatever the
    template prints, when it contradicts its type's due-date rule (an
    ``overdue`` reminder for a bill not yet past due, an ``upcoming`` one for
    a bill already past due, ``today`` being the tenant's date), when an
    amount is negative or not a finite number, or when its message would be
    longer than MAX_MESSAGE_LENGTH (billing/domain/templating.py)."""
    declared = message_types.get(template_type)
    rows: list[tuple] = []
    rejected: list[Rejection] = []
    first_index_of_phone: dict[str, int] = {}
    for index, contact in enumerate(body.contacts):
        data = contact.model_dump(exclude_none=True)
        raw_phone = str(data.get("telefone", ""))
        name = data.get("nome_cliente") or data.get("nome") or ""
        try:
            phone = normalize_phone(raw_phone)
            if phone in first_index_of_phone:
                raise _Reject(f"duplicate phone: same as contact {first_index_of_phone[phone]}")
            for key in MONEY_FIELDS:
                problem = amount_problem(key, data.get(key))
                if problem:
                    raise _Reject(problem)
            values = template_variables(data, today=today)
            for required in declared.required_variables:
                if values.get(required) is None or not sanitize_value(values[required]):
                    raise MissingVariable(required)
            if values.get("data_vencimento_iso"):
                problem = type_contradiction(template_type=template_type, due=values["data_vencimento_iso"], today=today)
                if problem:
                    raise _Reject(problem)
            variation, message = renderer.render(values)
        except (InvalidPhone, InvalidDate, InvalidAmount, MissingVariable, MessageTooLong, _Reject) as exc:
            reason = f"missing variable '{exc.name}'" if isinstance(exc, MissingVariable) else str(exc)
            rejected.append(Rejection(index=index, telefone=raw_phone, reason=reason))
            rows.append((index, name, raw_phone, data, "", None, ContactStatus.REJECTED, reason, now))
            continue
        first_index_of_phone[phone] = index
        # The caller's own fields are stored; the computed ones (dias_atraso...)
        # are derived again whenever needed, which keeps the rows small.
        rows.append((index, name, phone, data, message, variation.id, ContactStatus.PENDING, "", None))
    return rows, rejected


def _mark_opted_out(tenant_id: int, rows: list[tuple], *, now) -> list[tuple]:
    """Contacts whose phone asked this tenant to stop end opted_out, unsent."""
    pending = [row[2] for row in rows if row[6] == ContactStatus.PENDING]
    opted = opted_out_phones(tenant_id, pending)
    if not opted:
        return rows
    return [
        (*row[:6], ContactStatus.OPTED_OUT, OPTED_OUT_REASON, now) if row[6] == ContactStatus.PENDING and row[2] in opted else row
        for row in rows
    ]


class _Reject(ValueError):
    pass


def _copy_text(text: str) -> str:
    """Text in COPY's text format: backslash, tab, newline and carriage return
    escaped. (Chained str.replace runs in C and is several times faster here
    than str.translate or the csv module.)"""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _bulk_insert(rows: list[tuple], *, queue_id: str, campaign_id: str, tenant_id: int) -> None:
    """Insert every contact row: COPY on PostgreSQL, batched INSERT on SQLite."""
    now = utcnow()

    def full_row(row: tuple) -> tuple:
        position, name, phone, variables, message, variation_id, status, reason, finished_at = row
        return (
            queue_id, campaign_id, tenant_id, position, name[:255], phone[:64], "", variables, message, variation_id, status, 0,
            reason, "", finished_at, now, now,
            "", False,
        )

    if is_postgres():
        # One f-string per row in INSERT_FIELDS order; only the free-text
        # columns need escaping (ids, numbers, status and times never hold a
        # tab, newline or backslash).
        esc, dumps, null = _copy_text, Contact.variables.db_value, "\\N"
        lines = [
            f"{queue_id}\t{campaign_id}\t{tenant_id}\t{position}\t{esc(name[:255])}\t{esc(phone[:64])}\t\t"
            f"{esc(dumps(variables))}\t{esc(message)}\t{null if variation_id is None else variation_id}\t{status}\t0\t"
            f"{esc(reason)}\t\t{null if finished_at is None else finished_at}\t{now}\t{now}\t\tf\n"
            for position, name, phone, variables, message, variation_id, status, reason, finished_at in rows
        ]
        columns = ", ".join(f.column_name for f in INSERT_FIELDS)
        database.cursor().copy_expert(f"COPY {Contact._meta.table_name} ({columns}) FROM STDIN", io.StringIO("".join(lines)))
        return
    for start in range(0, len(rows), SQLITE_INSERT_BATCH):
        batch = [full_row(row) for row in rows[start:start + SQLITE_INSERT_BATCH]]
        Contact.insert_many(batch, fields=INSERT_FIELDS).execute()
