"""Wiring a process: logging, the database, the broker and its actors, from
one :class:`~billing.config.Settings`.

Importing :mod:`tasks` only declares the actors (on :data:`tasks.registry.REGISTRY`).
Every entrypoint then calls :func:`setup` once: the web app factory, the
worker processes (``billing worker``, or ``dramatiq tasks.worker``), the
scheduler, the CLI, the embedded ``billing run``, and another Python service
that enqueues work. Nothing connects during set-up: the database and the
broker are reached when first used.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import dramatiq
import dramatiq.broker
import peewee
import structlog
from dramatiq.middleware import MiddlewareError

from billing import fairness
from billing.adapters import encryption, outbound
from billing.adapters.db import connect
from billing.adapters.db import database as db_proxy
from billing.config import Settings
from billing.errors import DatabaseMisconfigured, redact_url
from billing.logconfig import configure_logging as _configure_logging
from tasks import actors
from tasks.broker import build_broker
from tasks.middleware import WorkerHeartbeat
from tasks.registry import declared_actors


@dataclass(frozen=True)
class Wiring:
    """What :func:`setup` wired in this process.

    Parameters:
      settings: the settings everything was built from.
      broker: the broker the actors send to (also Dramatiq's global broker).
      database: the database the models are bound to.
      jobs: the enqueue side of the actors, as the web app uses it.
    """

    settings: Settings
    broker: dramatiq.Broker
    database: peewee.Database
    jobs: actors._Jobs


_lock = threading.Lock()
_current: Wiring | None = None


def setup(*, settings: Settings | None = None, configure_logging: bool = True) -> Wiring:
    """Wire this process: logging, the database, the broker with its
    middleware, and the actors moved onto that broker, which also becomes
    Dramatiq's global one.

    Calling it again with equal settings returns the first call's wiring and
    changes nothing (every entrypoint may call it). Calling it with other
    settings, or after other code rebound the models or Dramatiq's global
    broker, wires the process anew: the previous broker is closed and the
    actors and the models move to the new broker and database. Do that only
    while no worker runs (tests do it between cases).

    Parameters:
      settings: what to build (default: :meth:`Settings.from_env`, the only
        place the environment is read).
      configure_logging: False leaves the process's logging alone (a service
        with logging of its own); True sets up structlog as LOG_FORMAT and
        LOG_LEVEL say.

    Returns:
      The wiring: settings, broker, database and the jobs port.

    Raises:
      DatabaseMisconfigured: DATABASE_URL cannot be read, or its SQLite
        directory cannot be created.
      EncryptionMisconfigured: BILLING_ENCRYPTION_KEYS is malformed, or unset
        with PostgreSQL (billing.adapters.encryption).
    """
    global _current
    settings = settings or Settings.from_env()
    with _lock:
        if configure_logging:
            _configure_logging(log_format=settings.log_format, level=settings.log_level)
        outbound.configure(gateway_private_networks=settings.gateway_private_networks)
        if _current is not None and _current.settings == settings and _still_wired(_current):
            encryption.configure(keys=settings.keys(), database_url=settings.database_url)  # a test may have swapped them
            return _current
        database = _connect(settings.database_url)
        # After DATABASE_URL is known to be usable, before the broker: PostgreSQL without keys refuses here.
        encryption.configure(keys=settings.keys(), database_url=settings.database_url)
        broker = build_broker(settings)
        # Before the heartbeat: a refused bound stops the boot before the process registers.
        broker.add_middleware(TenantBound(settings.send_tenant_concurrency), before=WorkerHeartbeat)
        for declared in declared_actors():
            # What dramatiq.actor(broker=...) does at declaration, on the real
            # broker: the actor sends there, and a worker there runs it.
            declared.broker = broker
            broker.declare_actor(declared)
        actors.configure(settings)
        dramatiq.set_broker(broker)
        if _current is not None:
            _current.broker.close()
        _current = Wiring(settings=settings, broker=broker, database=database, jobs=actors.jobs)
        return _current


class TenantBoundMisconfigured(MiddlewareError, ValueError):
    """SEND_TENANT_CONCURRENCY does not fit the worker: Dramatiq lets a
    MiddlewareError stop the worker's start (it logs and ignores others), and
    the CLI prints a ValueError as one line."""


class TenantBound(dramatiq.Middleware):
    """Bound each tenant's sends in this process (billing.fairness) once the
    worker's thread count is known: at worker boot, wherever a worker runs
    (``billing worker``, the ``dramatiq`` CLI, the embedded ``billing run``).

    Parameters:
      configured: SEND_TENANT_CONCURRENCY (None: the default; 0: no bound).
    """

    def __init__(self, configured: int | None) -> None:
        self.configured = configured

    def before_worker_boot(self, broker, worker):
        # A value that lets one tenant take every thread stops the boot with
        # its reason (``billing worker`` refuses it before starting children).
        try:
            limit = fairness.limit_for(configured=self.configured, threads=worker.worker_threads)
        except ValueError as exc:
            raise TenantBoundMisconfigured(str(exc)) from None
        fairness.configure(limit=limit)
        structlog.get_logger(__name__).info("tenant send bound", per_tenant=limit or "none",
                                            threads=worker.worker_threads)

    def after_worker_shutdown(self, broker, worker):
        # The next worker of this process (tests start several) sets its own.
        fairness.configure(limit=fairness.DEFAULT_TENANT_CONCURRENCY)


def _still_wired(wiring: Wiring) -> bool:
    """Whether the process still uses ``wiring`` (code that binds the models
    or sets Dramatiq's broker itself, as tests do, undoes it)."""
    return db_proxy.obj is wiring.database and dramatiq.broker.global_broker is wiring.broker


def _connect(url: str) -> peewee.Database:
    """Bind the models to ``url``; a URL that cannot be used is one readable error."""
    try:
        return connect(url)
    except ValueError as exc:
        text = str(exc)  # db.connect names DATABASE_URL itself; urllib's errors do not
        message = text if text.startswith("DATABASE_URL") else f"DATABASE_URL is not valid: {text}"
        raise DatabaseMisconfigured(message) from None
    except OSError as exc:  # the SQLite file's directory cannot be created
        raise DatabaseMisconfigured(
            f"cannot create the database directory for {redact_url(url)}: {exc.strerror or exc}"
        ) from None
