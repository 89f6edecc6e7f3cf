"""The database connection: one peewee proxy, bound once per process.

SQLite and PostgreSQL share every query. The few places where they differ
(row locks, bulk loading) ask :func:`is_postgres` and keep both branches side by
side, so a reader sees the whole behaviour in one spot.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from urllib.parse import urlparse

import peewee
from playhouse.db_url import connect as _connect_url

#: The proxy every model binds to; :func:`connect` initializes it.
database = peewee.DatabaseProxy()

#: SQLite waits this long (ms) for a competing writer instead of failing,
#: since the embedded mode writes from web, worker and scheduler threads.
SQLITE_BUSY_TIMEOUT_MS = 30_000

#: SQLite pragmas: WAL lets readers run beside the single writer, and foreign
#: keys are off by default in SQLite.
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
    "synchronous": "normal",
}


#: Connections one process may hold; above a worker's thread count.
POSTGRES_POOL_SIZE = 32
#: Idle connections older than this are closed rather than reused.
POSTGRES_STALE_SECONDS = 300
#: How long a thread waits for a free pooled connection before failing.
POSTGRES_POOL_WAIT_SECONDS = 30


def connect(url: str) -> peewee.Database:
    """Open the database named by ``url`` and bind the models to it.

    Parameters:
      url: ``sqlite:///relative/path.sqlite3``, ``sqlite:////abs/path``,
        ``sqlite:///:memory:`` or ``postgresql://user:pass@host:port/name``.

    Returns:
      The peewee database (also reachable through :data:`database`).
    """
    scheme = urlparse(url).scheme
    _release_previous()
    if scheme.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            _create_private_file(path)
        db = peewee.SqliteDatabase(path or ":memory:", pragmas=SQLITE_PRAGMAS, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    elif scheme in ("postgres", "postgresql"):
        # Pooled: web requests and actor messages check a connection out and
        # back in; a connection broken by a server restart is discarded.
        pooled = url.replace(f"{scheme}://", "postgresql+pool://", 1)
        db = _connect_url(
            pooled, max_connections=POSTGRES_POOL_SIZE, stale_timeout=POSTGRES_STALE_SECONDS, timeout=POSTGRES_POOL_WAIT_SECONDS
        )
    else:
        raise ValueError(
            f"DATABASE_URL must start with sqlite:/// or postgresql://, got {scheme or url!r}"
        )
    database.initialize(db)
    return db


#: A SQLite file we create, and the key file beside it, are the owner's
#: only: they hold every tenant's customers and secrets. (SQLite gives its
#: -wal and -shm files the database file's mode.)
SQLITE_FILE_MODE = 0o600
#: A directory we create for it is not listable by others either.
SQLITE_DIRECTORY_MODE = 0o700


def _create_private_file(path: str) -> None:
    """Create the SQLite file ``path`` (and its directory) readable by its
    owner only, before SQLite would create it with the umask's mode (often
    world-readable). An existing file keeps the mode its owner gave it."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=SQLITE_DIRECTORY_MODE, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SQLITE_FILE_MODE))
    except FileExistsError:
        pass


def _release_previous() -> None:
    """Close the connections of a database bound earlier (tests rebind)."""
    previous = database.obj
    if previous is None:
        return
    close_all = getattr(previous, "close_all", None)
    if close_all is not None:
        close_all()
    elif not previous.is_closed():
        previous.close()


def is_postgres() -> bool:
    """Whether the bound database is PostgreSQL."""
    return isinstance(database.obj, peewee.PostgresqlDatabase)


@contextlib.contextmanager
def write_transaction() -> Iterator[None]:
    """A transaction that will write; serializes writers on SQLite.

    SQLite's default deferred transaction takes its write lock late and can fail
    with "database is locked" when two threads upgrade at once; BEGIN IMMEDIATE
    takes it up front and waits (busy_timeout) instead. PostgreSQL uses an
    ordinary transaction and row locks.
    """
    if is_postgres():
        with database.atomic():
            yield
        return
    if database.in_transaction():
        with database.atomic():
            yield
        return
    with database.atomic("IMMEDIATE"):
        yield


def locked(query: peewee.Select, *, skip_locked: bool = False) -> peewee.Select:
    """Lock the selected rows for an update, on PostgreSQL.

    ``FOR NO KEY UPDATE``, not ``FOR UPDATE``: we never change keys, and the
    weaker lock does not conflict with the ``FOR KEY SHARE`` locks that
    foreign-key checks take on parent rows (a contact updated twice in one
    transaction key-shares its tenant; a ``FOR UPDATE`` of that tenant by two
    such transactions deadlocks them).

    On SQLite the enclosing :func:`write_transaction` already holds the
    database's single write lock, which gives the same exclusion.

    Parameters:
      query: a select to lock the rows of.
      skip_locked: skip rows another transaction holds (batch claims).
    """
    if not is_postgres():
        return query
    return query.for_update("FOR NO KEY UPDATE SKIP LOCKED" if skip_locked else "FOR NO KEY UPDATE")
