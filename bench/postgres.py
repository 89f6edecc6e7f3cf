"""What the benchmarks share about PostgreSQL: a scratch database that is
dropped whatever happens, the server's version, and URLs fit for messages."""
from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

from psycopg2 import sql

from billing.adapters import db as billing_db


def redact(url: str) -> str:
    """``url`` without its password, fit for a message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


@contextlib.contextmanager
def scratch_database(admin, server_url: str, *, prefix: str) -> Iterator[str]:
    """Create a database, yield its URL, and drop it whatever happens.

    Parameters:
      admin: an autocommit psycopg2 connection to the server.
      server_url: the server's URL (its path is replaced by the new name).
      prefix: the new database's name starts with this.
    """
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        # Give back billing's pooled connections before dropping.
        close_all = getattr(billing_db.database.obj, "close_all", None)
        if close_all is not None:
            close_all()
        with admin.cursor() as cur:
            # A connection left open (ours after an error, a process that
            # outlived the stack) would make DROP DATABASE fail.
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def server_version(admin) -> str:
    with admin.cursor() as cur:
        cur.execute("SHOW server_version")
        return cur.fetchone()[0]
