"""The domain's errors. Entry points map each kind to what their user sees
(an HTTP status and JSON body, or a line on the terminal)."""
from __future__ import annotations


class BillingError(Exception):
    """Base of every error the domain raises on purpose.

    Parameters:
      message: one readable sentence for the caller.
      errors: optional details (a list of {field, message} or {index, ...}).
    """

    #: The HTTP status an entry point should answer with.
    http_status = 400

    def __init__(self, message: str, *, errors: list | None = None, **context) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors
        self.context = context


class NotFound(BillingError):
    http_status = 404


class Conflict(BillingError):
    http_status = 409


class InvalidRequest(BillingError):
    """The request cannot be processed as sent (a caller bug)."""

    http_status = 422


class PayloadTooLarge(BillingError):
    http_status = 413


class Unauthorized(BillingError):
    http_status = 401


class Forbidden(BillingError):
    http_status = 403


class DuplicateCampaign(Conflict):
    """A campaign with this external_id exists; nothing was created."""

    def __init__(self, *, external_id: str, campaign_id: str, queue_id: str) -> None:
        super().__init__(
            f"external_id '{external_id}' already exists",
            billing_campaign_id=campaign_id,
            queue_id=queue_id,
        )
