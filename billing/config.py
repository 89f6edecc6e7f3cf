"""Settings read from the environment, in one place.

Every process (web, worker, scheduler, the embedded all-in-one) reads the same
variables, so a deployment is configured once. README documents each one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

#: The directory of the default SQLite file, when set (an absolute path is
#: best; a relative one is taken from the directory the process starts in).
BILLING_HOME_VARIABLE = "BILLING_HOME"

#: Without BILLING_HOME, the file lives in the user's data directory:
#: ``$XDG_DATA_HOME/<this>`` or ``~/.local/share/<this>``.
DATA_DIRECTORY_NAME = "whatsapp-billing"

#: The SQLite file's name in that directory.
SQLITE_FILE_NAME = "billing.sqlite3"


def default_database_url(environ: Mapping[str, str] | None = None) -> str:
    """The SQLite database used when DATABASE_URL is unset: one absolute
    path per user, whatever directory a command is run from.

    ``$BILLING_HOME/billing.sqlite3`` when BILLING_HOME is set, else
    ``$XDG_DATA_HOME/whatsapp-billing/billing.sqlite3`` (an absolute
    XDG_DATA_HOME only, as the XDG spec says), else
    ``~/.local/share/whatsapp-billing/billing.sqlite3``.

    Parameters:
      environ: the environment to read (default: the process's).
    """
    environ = os.environ if environ is None else environ
    home = environ.get(BILLING_HOME_VARIABLE, "").strip()
    if home:
        directory = os.path.abspath(os.path.expanduser(home))
    else:
        data_home = environ.get("XDG_DATA_HOME", "").strip()
        if not os.path.isabs(data_home):
            data_home = os.path.join(os.path.expanduser("~"), ".local", "share")
        directory = os.path.join(data_home, DATA_DIRECTORY_NAME)
    return f"sqlite:///{os.path.join(directory, SQLITE_FILE_NAME)}"

#: Largest number of contacts one send request may carry.
DEFAULT_MAX_CONTACTS_PER_REQUEST = 10_000

#: How far ahead (seconds) dispatch books send slots and hands them to the
#: broker. Kept short because RabbitMQ redelivers messages held longer than its
#: consumer_timeout and Dramatiq keeps delayed messages in worker memory.
DEFAULT_DISPATCH_HORIZON_SECONDS = 60

#: How many contacts one dispatch pass may book at most.
DEFAULT_DISPATCH_BATCH_SIZE = 500

#: How often (seconds) the scheduler looks for work the broker lost.
DEFAULT_RECOVERY_INTERVAL_SECONDS = 10

#: How often (seconds) the scheduler asks each instance's gateway for its state.
DEFAULT_HEALTH_INTERVAL_SECONDS = 30

#: Backoff bounds (ms) of the broker's quick retries of a failed send.
DEFAULT_SEND_RETRY_MIN_BACKOFF_MS = 5_000
DEFAULT_SEND_RETRY_MAX_BACKOFF_MS = 5 * 60_000

#: A send claimed longer ago than this (seconds) belongs to a dead worker.
DEFAULT_CLAIM_TIMEOUT_SECONDS = 300


def env_int(name: str, default: int) -> int:
    """A whole number from the environment (``default`` when unset or blank)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    """The process configuration.

    Parameters:
      database_url: ``sqlite:///path`` or ``postgresql://user@host/db``
        (default: :func:`default_database_url`).
      broker_url: ``amqp://...`` for RabbitMQ; empty for the embedded broker.
      public_url: the base URL gateways reach this service at (webhook URLs).
      admin_token: the operator's token for the admin API (every tenant).
      trusted_proxies: CIDRs of reverse proxies whose X-Forwarded-For is
        believed (for API keys' IP allowlists); empty: none.
      host, port: where the HTTP server listens.
      log_format: ``json`` or ``console``; empty picks console on a terminal.
      log_level: a logging level name.
      worker_threads: threads of the in-process worker (embedded mode).
      max_contacts_per_request: contacts one send request may carry.
      dispatch_horizon_seconds: how far ahead dispatch books slots.
      dispatch_batch_size: contacts one dispatch pass books at most.
      recovery_interval_seconds: how often the scheduler recovers lost work.
      health_interval_seconds: how often instances' gateways are asked their state.
      claim_timeout_seconds: age after which a send claim is taken as dead.
      send_retry_min_backoff_ms, send_retry_max_backoff_ms: backoff bounds of
        the broker's quick retries of a failed send.
    """

    database_url: str = field(default_factory=default_database_url)
    broker_url: str = ""
    public_url: str = ""
    admin_token: str = ""
    trusted_proxies: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    log_format: str = ""
    log_level: str = "INFO"
    worker_threads: int = 4
    max_contacts_per_request: int = DEFAULT_MAX_CONTACTS_PER_REQUEST
    dispatch_horizon_seconds: int = DEFAULT_DISPATCH_HORIZON_SECONDS
    dispatch_batch_size: int = DEFAULT_DISPATCH_BATCH_SIZE
    recovery_interval_seconds: int = DEFAULT_RECOVERY_INTERVAL_SECONDS
    health_interval_seconds: int = DEFAULT_HEALTH_INTERVAL_SECONDS
    claim_timeout_seconds: int = DEFAULT_CLAIM_TIMEOUT_SECONDS
    send_retry_min_backoff_ms: int = DEFAULT_SEND_RETRY_MIN_BACKOFF_MS
    send_retry_max_backoff_ms: int = DEFAULT_SEND_RETRY_MAX_BACKOFF_MS

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    @classmethod
    def from_env(cls) -> "Settings":
        """Read the settings from the process environment."""
        return cls(
            database_url=os.environ.get("DATABASE_URL", "").strip() or default_database_url(),
            broker_url=os.environ.get("BROKER_URL", "").strip(),
            public_url=os.environ.get("PUBLIC_URL", "").strip().rstrip("/"),
            admin_token=os.environ.get("BILLING_ADMIN_TOKEN", "").strip(),
            trusted_proxies=tuple(p.strip() for p in os.environ.get("TRUSTED_PROXIES", "").split(",") if p.strip()),
            host=os.environ.get("HOST", "").strip() or "127.0.0.1",
            port=env_int("PORT", 8000),
            log_format=os.environ.get("LOG_FORMAT", "").strip().lower(),
            log_level=os.environ.get("LOG_LEVEL", "").strip().upper() or "INFO",
            worker_threads=env_int("WORKER_THREADS", 4),
            max_contacts_per_request=env_int(
                "MAX_CONTACTS_PER_REQUEST", DEFAULT_MAX_CONTACTS_PER_REQUEST
            ),
            dispatch_horizon_seconds=env_int(
                "DISPATCH_HORIZON_SECONDS", DEFAULT_DISPATCH_HORIZON_SECONDS
            ),
            dispatch_batch_size=env_int("DISPATCH_BATCH_SIZE", DEFAULT_DISPATCH_BATCH_SIZE),
            recovery_interval_seconds=env_int("RECOVERY_INTERVAL_SECONDS", DEFAULT_RECOVERY_INTERVAL_SECONDS),
            health_interval_seconds=env_int("HEALTH_INTERVAL_SECONDS", DEFAULT_HEALTH_INTERVAL_SECONDS),
            claim_timeout_seconds=env_int("CLAIM_TIMEOUT_SECONDS", DEFAULT_CLAIM_TIMEOUT_SECONDS),
            send_retry_min_backoff_ms=env_int("SEND_RETRY_MIN_BACKOFF_MS", DEFAULT_SEND_RETRY_MIN_BACKOFF_MS),
            send_retry_max_backoff_ms=env_int("SEND_RETRY_MAX_BACKOFF_MS", DEFAULT_SEND_RETRY_MAX_BACKOFF_MS),
        )
