"""The domain's errors. Entry points map each kind to what their user sees
(an HTTP status and JSON body, or a line on the terminal)."""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import peewee


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


# --- the database as a dependency -------------------------------------------------

#: Seconds a caller is told to wait (Retry-After) when the database cannot
#: answer: a restart or failover takes about this long.
DATABASE_RETRY_AFTER_SECONDS = 5

#: The command that brings a database's schema up to date.
UPGRADE_COMMAND = "billing db upgrade"

#: PostgreSQL error codes of a schema older than the code: a missing table or column.
PG_UNDEFINED_OBJECT_CODES = ("42P01", "42703")

#: PostgreSQL error classes of a server that cannot serve now: connection
#: exceptions (08), operator intervention such as a shutdown (57), and a
#: read-only standby after a failover (25006).
PG_UNAVAILABLE_CODE_PREFIXES = ("08", "57", "25006")

#: SQLite messages of a schema older than the code.
SQLITE_SCHEMA_MESSAGES = ("no such table", "no such column", "has no column named")

#: Driver messages of a database that is not there or not ours to use: a
#: mistake in DATABASE_URL or on the server, which waiting does not heal.
_MISCONFIGURED = (
    (re.compile(r'database "([^"]+)" does not exist'), "database '{0}' does not exist"),
    (re.compile(r'role "([^"]+)" does not exist'), "database user '{0}' does not exist"),
    (re.compile(r"password authentication failed for user \"([^\"]+)\""),
     "the database refused the password of user '{0}'"),
    (re.compile(r"could not translate host name \"([^\"]+)\""), "unknown database host '{0}'"),
    (re.compile(r"invalid dsn|invalid connection option|missing \"=\" after"), "DATABASE_URL is not valid"),
    (re.compile(r"unable to open database file"), "cannot open the SQLite database file"),
)


class ServiceUnavailable(BillingError):
    """A dependency cannot serve now; the same request may work later.

    Parameters:
      message: one sentence safe to show a caller (no host, no SQL).
      detail: the operator's sentence (which database, what the driver said),
        for logs and the CLI.
      retry_after: seconds to tell the caller to wait.
    """

    http_status = 503

    def __init__(self, message: str, *, detail: str = "", retry_after: int = DATABASE_RETRY_AFTER_SECONDS) -> None:
        super().__init__(message)
        self.detail = detail or message
        self.retry_after = retry_after


class DatabaseUnavailable(ServiceUnavailable):
    """The database server cannot be reached or is not serving (restart,
    failover, network, too many connections)."""


class DatabaseMisconfigured(ServiceUnavailable):
    """DATABASE_URL names a database that cannot be used as it is (it does
    not exist, a bad user or password, an unknown host, a bad URL)."""


class SchemaNotUpgraded(ServiceUnavailable):
    """The database's schema is older than the code: ``billing db upgrade``."""

    def __init__(self, *, detail: str = "") -> None:
        super().__init__(
            f"the database schema is not upgraded; run `{UPGRADE_COMMAND}` first",
            detail=f"the database schema is not upgraded ({detail}); run `{UPGRADE_COMMAND}` first" if detail else "",
        )


def redact_url(url: str) -> str:
    """``url`` without its password, fit for a log line or an error message.

    Parameters:
      url: a database or broker URL.
    """
    try:
        parts = urlsplit(url)
        if not parts.password:
            return url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:  # a URL too broken to parse: keep only its scheme
        return url.split(":", 1)[0] + "://..."


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's own exception behind a peewee one (it carries pgcode)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        if getattr(current, "pgcode", None):
            return current
        seen.append(current)
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return exc


def database_problem(exc: BaseException, *, url: str = "") -> ServiceUnavailable | None:
    """What a database exception means for a caller, or None for a bug.

    Entry points use it to answer 503 with Retry-After (web) or print one
    line (CLI) instead of a traceback.

    Parameters:
      exc: an exception raised while talking to the database.
      url: DATABASE_URL, named (without its password) in the operator's detail.
    """
    where = f" ({redact_url(url)})" if url else ""
    if isinstance(exc, ServiceUnavailable):
        return exc
    busy = "the database is busy; retry later"
    if exc.__class__.__name__ == "MaxConnectionsExceeded":  # playhouse.pool: every pooled connection busy
        return DatabaseUnavailable(busy, detail=f"no free database connection in the pool{where}")
    if not isinstance(exc, (peewee.DatabaseError, peewee.InterfaceError)):
        return None
    driver = _driver_error(exc)
    text = " ".join(str(driver).split())
    code = getattr(driver, "pgcode", None) or ""
    if "syntax error" in text:  # SQLite reports its parse errors as OperationalError: a bug, not an outage
        return None
    if code in PG_UNDEFINED_OBJECT_CODES or any(m in text for m in SQLITE_SCHEMA_MESSAGES):
        return SchemaNotUpgraded(detail=text.split(" LINE ", 1)[0])
    if "database is locked" in text:  # SQLite: another writer held the lock past busy_timeout
        return DatabaseUnavailable(busy, detail=f"the SQLite database stayed locked by another writer{where}")
    for pattern, sentence in _MISCONFIGURED:
        found = pattern.search(text)
        if found:
            detail = sentence.format(*found.groups()) + where
            return DatabaseMisconfigured("the database is not available", detail=detail)
    if code.startswith(PG_UNAVAILABLE_CODE_PREFIXES) or isinstance(exc, (peewee.OperationalError, peewee.InterfaceError)):
        reason = text.split(" Is the server running", 1)[0]
        detail = f"cannot reach the database{where}: {reason}"
        return DatabaseUnavailable("the database is unavailable; retry later", detail=detail)
    return None


def require_current_schema() -> None:
    """Raise :class:`SchemaNotUpgraded` when migrations are pending.

    Raises:
      SchemaNotUpgraded: the bound database is behind ``billing.adapters.migrations``.
    """
    from billing.adapters import migrations  # migrations imports the models; errors must not

    latest = migrations.MIGRATIONS[-1].version
    current = migrations.current_version()
    if current < latest:
        raise SchemaNotUpgraded(detail=f"at version {current}, the code needs {latest}")
