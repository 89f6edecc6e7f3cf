"""Settings read from the environment, in one place.

Every process (web, worker, scheduler, the embedded all-in-one) reads the same
variables, so a deployment is configured once. README documents each one.
This is the only module that reads the environment: the entrypoints call
:meth:`Settings.from_env` and hand the result (or values of it) to the rest.
"""
from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

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

#: Fernet keys of the secrets stored encrypted, comma-separated: the first
#: encrypts, all decrypt (billing.adapters.encryption).
ENCRYPTION_KEYS_VARIABLE = "BILLING_ENCRYPTION_KEYS"


def default_encryption_keys(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The keys BILLING_ENCRYPTION_KEYS names, first one first (empty: unset;
    SQLite then keeps a local key file, PostgreSQL refuses to start).

    Parameters:
      environ: the environment to read (default: the process's).
    """
    environ = os.environ if environ is None else environ
    return tuple(k.strip() for k in environ.get(ENCRYPTION_KEYS_VARIABLE, "").split(",") if k.strip())


#: CIDRs of the private networks gateways may be in, comma-separated
#: (billing.adapters.outbound); every other gateway address must be public.
GATEWAY_NETWORKS_VARIABLE = "GATEWAY_PRIVATE_NETWORKS"


def default_gateway_private_networks(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The networks GATEWAY_PRIVATE_NETWORKS lists, as normalized CIDRs
    (empty: unset, gateways must be public).

    Parameters:
      environ: the environment to read (default: the process's).

    Raises:
      ValueError: an item is not a network, naming it.
    """
    environ = os.environ if environ is None else environ
    networks = []
    for item in environ.get(GATEWAY_NETWORKS_VARIABLE, "").split(","):
        if not item.strip():
            continue
        try:
            networks.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError:
            raise ValueError(f"{GATEWAY_NETWORKS_VARIABLE}: {item.strip()!r} is not a network "
                             "(write CIDRs such as 10.0.0.0/8,fd00::/8)") from None
    return tuple(networks)


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

#: Failed authentications one client address may make per window
#: (billing.limits.FAILED_AUTH_WINDOW) before it is answered 429.
DEFAULT_FAILED_AUTH_LIMIT = 20


#: Worker processes ``billing worker`` runs when neither --processes nor
#: WORKER_PROCESSES says.
DEFAULT_WORKER_PROCESSES = 2

#: How often (ms) a worker releases due delayed messages when
#: DRAMATIQ_WORKER_TIMEOUT is unset: Dramatiq's own 1000 makes sends late by up
#: to a second and bunches them.
DEFAULT_WORKER_TIMEOUT_MS = 100


def env_int(name: str, default: int, *, environ: Mapping[str, str] | None = None) -> int:
    """A whole number from the environment (``default`` when unset or blank).

    Parameters:
      name: the variable.
      default: the value when it is unset or blank.
      environ: the environment to read (default: the process's).

    Raises:
      ValueError: the variable is set to something else than a whole number.
    """
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


def _optional_int(name: str, environ: Mapping[str, str]) -> int | None:
    """A whole number from the environment, None when unset or blank."""
    return env_int(name, 0, environ=environ) if environ.get(name, "").strip() else None


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
      worker_threads: threads of a worker; None: the mode's own default
        (4 in the embedded mode, 8 per ``billing worker`` process).
      worker_processes: worker processes ``billing worker`` keeps running.
      worker_timeout_ms: how often (ms) a worker releases due delayed messages.
      max_contacts_per_request: contacts one send request may carry.
      dispatch_horizon_seconds: how far ahead dispatch books slots.
      dispatch_batch_size: contacts one dispatch pass books at most.
      recovery_interval_seconds: how often the scheduler recovers lost work.
      health_interval_seconds: how often instances' gateways are asked their state.
      claim_timeout_seconds: age after which a send claim is taken as dead.
      send_retry_min_backoff_ms, send_retry_max_backoff_ms: backoff bounds of
        the broker's quick retries of a failed send.
      send_tenant_concurrency: sends (and health checks) of one tenant a
        worker process runs at once (billing.fairness); None: the default
        (half the worker's threads, below them); 0: no bound.
      failed_auth_limit: failed authentications (API key, admin token,
        webhook secret or signature) one client address may make in
        billing.limits.FAILED_AUTH_WINDOW before every authentication from it
        answers 429 until the window ends; 0: no limit.
      gateway_private_networks: CIDRs of the private networks gateways may
        be in; None (the default, so building Settings reads no environment):
        :func:`default_gateway_private_networks` when the guard first needs them.
      encryption_keys: Fernet keys of the secrets stored encrypted, the
        encrypting one first; None (the default): BILLING_ENCRYPTION_KEYS,
        read when the process is wired (:meth:`keys`). Kept out of the repr.
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
    worker_threads: int | None = None
    worker_processes: int = DEFAULT_WORKER_PROCESSES
    worker_timeout_ms: int = DEFAULT_WORKER_TIMEOUT_MS
    max_contacts_per_request: int = DEFAULT_MAX_CONTACTS_PER_REQUEST
    dispatch_horizon_seconds: int = DEFAULT_DISPATCH_HORIZON_SECONDS
    dispatch_batch_size: int = DEFAULT_DISPATCH_BATCH_SIZE
    recovery_interval_seconds: int = DEFAULT_RECOVERY_INTERVAL_SECONDS
    health_interval_seconds: int = DEFAULT_HEALTH_INTERVAL_SECONDS
    claim_timeout_seconds: int = DEFAULT_CLAIM_TIMEOUT_SECONDS
    send_retry_min_backoff_ms: int = DEFAULT_SEND_RETRY_MIN_BACKOFF_MS
    send_retry_max_backoff_ms: int = DEFAULT_SEND_RETRY_MAX_BACKOFF_MS
    send_tenant_concurrency: int | None = None
    failed_auth_limit: int = DEFAULT_FAILED_AUTH_LIMIT
    encryption_keys: tuple[str, ...] | None = field(default=None, repr=False)
    gateway_private_networks: tuple[str, ...] | None = None

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    def keys(self) -> tuple[str, ...]:
        """The encryption keys: the given ones, else the environment's (read
        now, not when the settings were made: a module may build default
        settings at import without reading the environment)."""
        return default_encryption_keys() if self.encryption_keys is None else self.encryption_keys

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from the environment.

        Parameters:
          environ: the environment to read (default: the process's).

        Raises:
          ValueError: a number variable holds something else than a whole number.
        """
        env = os.environ if environ is None else environ

        def text(name: str) -> str:
            return env.get(name, "").strip()

        def number(name: str, default: int) -> int:
            return env_int(name, default, environ=env)

        return cls(
            database_url=text("DATABASE_URL") or default_database_url(env),
            broker_url=text("BROKER_URL"),
            public_url=text("PUBLIC_URL").rstrip("/"),
            admin_token=text("BILLING_ADMIN_TOKEN"),
            trusted_proxies=tuple(p.strip() for p in text("TRUSTED_PROXIES").split(",") if p.strip()),
            host=text("HOST") or "127.0.0.1",
            port=number("PORT", 8000),
            log_format=text("LOG_FORMAT").lower(),
            log_level=text("LOG_LEVEL").upper() or "INFO",
            worker_threads=_optional_int("WORKER_THREADS", env),
            worker_processes=number("WORKER_PROCESSES", DEFAULT_WORKER_PROCESSES),
            # Dramatiq's own CLI reads the lower-case spelling.
            worker_timeout_ms=number("DRAMATIQ_WORKER_TIMEOUT",
                                     number("dramatiq_worker_timeout", DEFAULT_WORKER_TIMEOUT_MS)),
            max_contacts_per_request=number("MAX_CONTACTS_PER_REQUEST", DEFAULT_MAX_CONTACTS_PER_REQUEST),
            dispatch_horizon_seconds=number("DISPATCH_HORIZON_SECONDS", DEFAULT_DISPATCH_HORIZON_SECONDS),
            dispatch_batch_size=number("DISPATCH_BATCH_SIZE", DEFAULT_DISPATCH_BATCH_SIZE),
            recovery_interval_seconds=number("RECOVERY_INTERVAL_SECONDS", DEFAULT_RECOVERY_INTERVAL_SECONDS),
            health_interval_seconds=number("HEALTH_INTERVAL_SECONDS", DEFAULT_HEALTH_INTERVAL_SECONDS),
            claim_timeout_seconds=number("CLAIM_TIMEOUT_SECONDS", DEFAULT_CLAIM_TIMEOUT_SECONDS),
            send_retry_min_backoff_ms=number("SEND_RETRY_MIN_BACKOFF_MS", DEFAULT_SEND_RETRY_MIN_BACKOFF_MS),
            send_retry_max_backoff_ms=number("SEND_RETRY_MAX_BACKOFF_MS", DEFAULT_SEND_RETRY_MAX_BACKOFF_MS),
            send_tenant_concurrency=_optional_int("SEND_TENANT_CONCURRENCY", env),
            failed_auth_limit=number("FAILED_AUTH_LIMIT", DEFAULT_FAILED_AUTH_LIMIT),
            encryption_keys=default_encryption_keys(env),
            gateway_private_networks=default_gateway_private_networks(env),
        )
