"""Only one scheduler runs the jobs, however many are started.

On PostgreSQL the leader holds a session advisory lock on a connection of its
own: if the process dies the connection closes, the lock is released and a
standby takes over. The embedded mode (SQLite) is one process; a file lock
next to the database keeps a second ``billing run`` on the same file from
double-running the jobs too.
"""
from __future__ import annotations

import fcntl
import os
import time
from urllib.parse import urlparse

import psycopg2
import structlog

log = structlog.get_logger(__name__)

#: Any constant works, as long as every scheduler process uses the same one.
PG_LEADER_LOCK_KEY = 727_002

#: How often a standby asks for the lock again (seconds).
STANDBY_RETRY_SECONDS = 5


class Leadership:
    """Held for as long as this object lives (and its connection or file)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._conn = None
        self._file = None

    def try_acquire(self) -> bool:
        if urlparse(self.database_url).scheme.startswith("postgres"):
            if self._conn is None or self._conn.closed:
                self._conn = psycopg2.connect(self.database_url)
                self._conn.autocommit = True
            with self._conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (PG_LEADER_LOCK_KEY,))
                return bool(cur.fetchone()[0])
        path = self.database_url.split(":///", 1)[-1] + ".scheduler.lock"
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._file = self._file or open(path, "w")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def wait(self) -> None:
        """Block until this process leads."""
        announced = False
        while not self.try_acquire():
            if not announced:
                log.info("another scheduler leads; standing by")
                announced = True
            time.sleep(STANDBY_RETRY_SECONDS)
        log.info("scheduler leads")

    def still_held(self) -> bool:
        """False once the lock's connection is gone (the lock went with it)."""
        if self._conn is None:
            return True
        try:
            with self._conn.cursor() as cur:
                cur.execute("SELECT 1")
            return True
        except psycopg2.Error:
            return False
