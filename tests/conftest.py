"""Shared fixtures: real SQLite and PostgreSQL databases, a real RabbitMQ.

PostgreSQL and RabbitMQ tests run when the services answer. When they do not,
a plain ``make test`` skips those tests with the reason; with
``BILLING_REQUIRE_SERVICES=1`` (CI) a missing service fails them instead.
"""
from __future__ import annotations

import contextlib
import os
import uuid

import psycopg2
import pytest
from psycopg2 import sql

from billing.adapters import db as billing_db
from billing.adapters import migrations
from billing.adapters.models import ALL_MODELS

POSTGRES_URL = os.environ.get("BILLING_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBITMQ_URL = os.environ.get("BILLING_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REQUIRE_SERVICES = os.environ.get("BILLING_REQUIRE_SERVICES", "") == "1"


def service_missing(name: str, detail: str):
    message = f"{name} is not reachable ({detail})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}; BILLING_REQUIRE_SERVICES=1 makes this a failure", pytrace=False)
    pytest.skip(f"{message}; start it to run this test")


def _admin_connection():
    conn = psycopg2.connect(POSTGRES_URL, connect_timeout=3)
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def postgres_database():
    """Create a fresh PostgreSQL database; yield its URL; drop it after."""
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
    with postgres_database() as url:
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


@pytest.fixture(params=["sqlite", "postgres"])
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
