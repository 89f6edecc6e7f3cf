"""Signed webhook events already received, so a replay applies nothing again.

A gateway that signs its webhooks (WAHA Plus) sends an event id and a time
with each; the time must be within MAX_SKEW of ours, so an id needs to be
remembered only a little longer than that. The ids are rows in the database,
shared by every web process; rows older than RETENTION are deleted as new
ones come (one indexed DELETE), so the table stays small without a job.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import peewee

from billing.adapters.db import database, write_transaction
from billing.adapters.models import WebhookDelivery
from billing.clock import utcnow

#: How far a signed webhook's time may be from ours, either way.
MAX_SKEW = timedelta(minutes=5)
#: How long an event id is remembered: longer than a request can be accepted
#: (the skew both ways), so every replay that passes the time check is caught.
RETENTION = 3 * MAX_SKEW


def _stored_id(event_id: str) -> str:
    """The id as stored: its SHA-256 (any length or character fits the column)."""
    return hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()


def is_fresh(sent_at: datetime, *, now: datetime | None = None) -> bool:
    """Whether a signed webhook's time is within MAX_SKEW of ``now``.

    Parameters:
      sent_at: the request's time (naive UTC).
      now: our time (default: now).
    """
    now = now or utcnow()
    return abs(now - sent_at) <= MAX_SKEW


def first_delivery(instance_id: int, event_id: str, *, now: datetime | None = None) -> bool:
    """Remember ``event_id`` for the instance; False when it was already there (a replay).

    Parameters:
      instance_id: the webhook URL's instance.
      event_id: the event's id as the gateway sent it.
      now: the time (default: now).
    """
    now = now or utcnow()
    with write_transaction():
        WebhookDelivery.delete().where(WebhookDelivery.received_at < now - RETENTION).execute()
        try:
            with database.atomic():  # a savepoint: the conflict leaves the cleanup standing
                WebhookDelivery.create(instance=instance_id, event_id=_stored_id(event_id), received_at=now)
        except peewee.IntegrityError:
            return False
    return True


def forget(instance_id: int, event_id: str) -> None:
    """Drop ``event_id`` again (its handling failed: the gateway's retry must apply it).

    Parameters:
      instance_id: the webhook URL's instance.
      event_id: the event's id.
    """
    WebhookDelivery.delete().where(
        (WebhookDelivery.instance == instance_id) & (WebhookDelivery.event_id == _stored_id(event_id))
    ).execute()

