"""A campaign's contacts, page by page, with each one's fate."""
from __future__ import annotations

import math
import uuid
from collections.abc import Iterable

from billing.adapters.models import Campaign, Contact, Queue
from billing.clock import as_utc_iso
from billing.domain.states import ContactStatus
from billing.errors import InvalidRequest, NotFound

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1_000
#: Far beyond any campaign (10,000 contacts a request), and small enough that
#: the OFFSET fits the database's integers.
MAX_PAGE = 1_000_000


def _positive_int(raw, *, name: str, maximum: int | None = None) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{name} must be a whole number, got '{raw}'") from None
    if value < 1 or (maximum is not None and value > maximum):
        limit = f" and at most {maximum}" if maximum else ""
        raise InvalidRequest(f"{name} must be at least 1{limit}, got {value}")
    return value


def get_campaign(campaign_id, *, tenant_id: int, types: Iterable[str] | None = None) -> Campaign:
    """The tenant's campaign, or NotFound (also for another tenant's).

    Parameters:
      campaign_id: the campaign's id (any text: a malformed one is not found).
      tenant_id: the caller's tenant.
      types: the message types the caller may see (an API key's scope); a
        campaign of another type is not found either. None: every type.
    """
    try:
        key = uuid.UUID(str(campaign_id))
    except ValueError:
        raise NotFound("campaign not found") from None
    where = (Campaign.id == key) & (Campaign.tenant == tenant_id)
    if types is not None:
        where &= Campaign.type.in_(list(types))
    campaign = Campaign.get_or_none(where)
    if campaign is None:
        raise NotFound("campaign not found")
    return campaign


def contact_view(contact: Contact) -> dict:
    return {
        "id": contact.id,
        "index": contact.position,
        "nome": contact.name,
        "telefone": contact.phone,
        "status": contact.status,
        "status_display": ContactStatus.LABELS.get(contact.status, contact.status),
        "reason": contact.reason,
        "attempts": contact.attempts,
        "message": contact.message,
        "variation_id": contact.variation_id,
        "provider_message_id": contact.provider_message_id,
        "sent_at": as_utc_iso(contact.sent_at),
        "delivered_at": as_utc_iso(contact.delivered_at),
        "read_at": as_utc_iso(contact.read_at),
        "finished_at": as_utc_iso(contact.finished_at),
    }


def list_contacts(campaign_id, *, tenant_id: int, page=1, page_size=DEFAULT_PAGE_SIZE, status: str | None = None,
                  types: Iterable[str] | None = None) -> dict:
    """One page of a campaign's contacts, in request order.

    Parameters:
      campaign_id: the campaign (another tenant's id is not found).
      tenant_id: the caller's tenant.
      page: 1-based page number.
      page_size: contacts per page (at most MAX_PAGE_SIZE).
      status: only contacts in this status.
      types: the message types the caller may see (see :func:`get_campaign`).
    """
    campaign = get_campaign(campaign_id, tenant_id=tenant_id, types=types)
    page = _positive_int(page, name="page", maximum=MAX_PAGE)
    page_size = _positive_int(page_size, name="page_size", maximum=MAX_PAGE_SIZE)
    where = Contact.campaign == campaign.id
    if status:
        if status not in ContactStatus.ALL:
            raise InvalidRequest(f"status must be one of {', '.join(ContactStatus.ALL)}, got '{status}'")
        where &= Contact.status == status
    total = Contact.select().where(where).count()
    rows = Contact.select().where(where).order_by(Contact.position).paginate(page, page_size)
    queue = Queue.get_or_none(Queue.campaign == campaign.id)
    return {
        "billing_campaign_id": str(campaign.id),
        "external_id": campaign.external_id,
        "queue_id": str(queue.id) if queue else None,
        "count": total,
        "page": page,
        "page_size": page_size,
        "pages": math.ceil(total / page_size) if total else 0,
        "results": [contact_view(c) for c in rows],
    }
