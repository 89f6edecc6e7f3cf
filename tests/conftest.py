"""Shared fixtures: real SQLite and PostgreSQL databases, a real RabbitMQ.

PostgreSQL and RabbitMQ tests run when the services answer. When they do not,
a plain ``make test`` skips those tests with the reason; with
``BILLING_REQUIRE_SERVICES=1`` (CI) a missing service fails them instead.

Every test that reaches a service carries its marker (``postgres``,
``rabbitmq``), so ``pytest -m "not postgres and not rabbitmq"`` runs the rest
with no skips. The markers follow from the fixtures: a test that uses a
service fixture (directly or through another fixture) is marked at collection
(:data:`SERVICE_FIXTURES`), and a parametrized fixture marks the parameters
that need a service (``db``'s ``postgres``). A test that reaches a service
another way (:func:`postgres_database` in its body, ``getfixturevalue``)
carries the marker itself; if it does not, it fails saying so
(:func:`require_marker`), whether or not the service is up.
"""
from __future__ import annotations

import contextlib
import os
import uuid

import psycopg2
import pytest
from psycopg2 import sql

from billing.adapters import db as billing_db
from billing.adapters import encryption, migrations
from billing.adapters.models import ALL_MODELS

#: The suite's key for the secrets stored encrypted. Put in the environment
#: before any test runs, so every Settings and every process the suite spawns
#: (CLI, workers, the stacks) uses it; PostgreSQL mode refuses to start
#: without one. Installed here too, for tests that use the models directly.
TEST_ENCRYPTION_KEY = "9RpUAe-PMVSscdo4rbjAZxe0dO_o7GrM5f8rJkqzRTU="
os.environ[encryption.KEYS_SETTING] = TEST_ENCRYPTION_KEY
encryption.install((TEST_ENCRYPTION_KEY,))

POSTGRES_URL = os.environ.get("BILLING_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBITMQ_URL = os.environ.get("BILLING_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REQUIRE_SERVICES = os.environ.get("BILLING_REQUIRE_SERVICES", "") == "1"

#: The fake gateways listen on loopback: the operator's setting that allows
#: them, for this process and every process a test spawns (it inherits it).
TEST_GATEWAY_NETWORKS = "127.0.0.0/8,::1/128"
os.environ["GATEWAY_PRIVATE_NETWORKS"] = TEST_GATEWAY_NETWORKS

#: Marker of each service, named after the service in failure messages.
POSTGRES, RABBITMQ = "postgres", "rabbitmq"
SERVICE_NAMES = {POSTGRES: "PostgreSQL", RABBITMQ: "RabbitMQ"}

#: Fixtures that reach a service, and the marker a test using one gets.
SERVICE_FIXTURES = {"postgres_database_url": POSTGRES, "rabbitmq_url": RABBITMQ}

#: The test whose setup, call or teardown is running (see
#: :func:`pytest_runtest_protocol`), for :func:`require_marker`.
_running: list[pytest.Item] = []


def pytest_collection_modifyitems(items):
    """Mark every test that uses a service fixture (its fixture closure
    includes fixtures of fixtures) with that service's marker."""
    for item in items:
        for fixture, marker in SERVICE_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()) and item.get_closest_marker(marker) is None:
                item.add_marker(marker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Remember the running test from before its first fixture (a session
    fixture that creates a database is set up within the first test needing it)."""
    _running.append(item)
    try:
        return (yield)
    finally:
        _running.pop()


@pytest.fixture(autouse=True)
def service_fixtures_are_marked(request):
    """After the test, check that every service fixture it reached, through
    ``getfixturevalue`` too, matches its markers."""
    yield
    for fixture, marker in SERVICE_FIXTURES.items():
        if fixture in request.fixturenames:
            require_marker(marker, node=request.node)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """An unmarked test skipped because a service is down fails instead:
    ``-m "not postgres and not rabbitmq"`` must run with no skips. (Catches
    what the other checks cannot: a session fixture that failed to reach its
    service once is not set up again, its skip is replayed.)"""
    report = yield
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return report
    reason = report.longrepr[2]
    for marker, name in SERVICE_NAMES.items():
        if reason.startswith(f"Skipped: {name} {UNREACHABLE}") and item.get_closest_marker(marker) is None:
            report.outcome = "failed"
            report.longrepr = f"{item.nodeid} reaches {name} but is not marked {marker}: {reason}"
    return report


def require_marker(marker: str, *, node: pytest.Item | None = None) -> None:
    """Fail the test unless it carries ``marker``: it reaches that service, so
    ``-m "not <marker>"`` must deselect it rather than have it skip.

    Parameters:
      marker: ``postgres`` or ``rabbitmq``.
      node: the test; the one running when not given (none: nothing to check).
    """
    node = node or (_running[-1] if _running else None)
    if node is None or node.get_closest_marker(marker) is not None:
        return
    pytest.fail(f"{node.nodeid} reaches {SERVICE_NAMES[marker]} but is not marked: add "
                f"@pytest.mark.{marker} (or pytest.param(..., marks=pytest.mark.{marker}) to the parameter "
                f"that needs it)", pytrace=False)


#: Says which service is down in a skip (read by :func:`pytest_runtest_makereport`).
UNREACHABLE = "is not reachable"


def service_missing(name: str, detail: str):
    message = f"{name} {UNREACHABLE} ({detail})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}; BILLING_REQUIRE_SERVICES=1 makes this a failure", pytrace=False)
    pytest.skip(f"{message}; start it to run this test")


def _admin_connection():
    conn = psycopg2.connect(POSTGRES_URL, connect_timeout=3)
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def postgres_database():
    """Create a fresh PostgreSQL database; yield its URL; drop it after.
    The calling test must be marked ``postgres``."""
    require_marker(POSTGRES)
    with _fresh_database() as url:
        yield url


@contextlib.contextmanager
def _fresh_database():
    """:func:`postgres_database` without the marker check, for fixtures (the
    tests that use them are marked at collection)."""
    try:
        admin = _admin_connection()
    except psycopg2.OperationalError as exc:
        service_missing("PostgreSQL", f"{POSTGRES_URL}: {' '.join(str(exc).split())}")
    name = f"billing_test_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base, _, _ = POSTGRES_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.close()


@pytest.fixture(scope="session")
def postgres_database_url():
    """A fresh PostgreSQL database for the in-process tests of the session."""
    with _fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def rabbitmq_url():
    import pika

    try:
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL + "?connection_attempts=1&socket_timeout=3"))
        connection.close()
    except Exception as exc:  # pika raises many kinds
        service_missing("RabbitMQ", f"{RABBITMQ_URL.split('@')[-1]}: {exc!r}")
    return RABBITMQ_URL


def _fresh_postgres(url: str) -> None:
    billing_db.connect(url)
    migrations.upgrade()
    tables = ", ".join(m._meta.table_name for m in ALL_MODELS)
    billing_db.database.execute_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, tmp_path):
    """A migrated, empty database of each kind; yields its URL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/billing.sqlite3"
        billing_db.connect(url)
        migrations.upgrade()
    else:
        url = request.getfixturevalue("postgres_database_url")
        _fresh_postgres(url)
    yield url
    if not billing_db.database.is_closed():
        billing_db.database.close()


@pytest.fixture
def sqlite_db(tmp_path):
    url = f"sqlite:///{tmp_path}/billing.sqlite3"
    billing_db.connect(url)
    migrations.upgrade()
    yield url
    billing_db.database.close()
