"""Only one scheduler runs the jobs, however many are started.

On PostgreSQL the leader holds a session advisory lock on a connection of its
own: if the process dies the connection closes, the lock is released and a
standby takes over. If the connection dies instead (a PostgreSQL restart), the
lock is gone with it while the process lives on: :meth:`Leadership.still_held`
asks the server whether this connection's backend holds the lock, and the
scheduler (see ``scheduler.run_leader``) steps down as soon as it does not.

The embedded mode (SQLite) is one process; a file lock next to the database
keeps a second ``billing run`` on the same file from double-running the jobs too.
"""
from __future__ import annotations

import fcntl
import os
import threading
import time
from urllib.parse import urlparse

import psycopg2
import structlog

log = structlog.get_logger(__name__)

#: Any constant works, as long as every scheduler process uses the same one.
PG_LEADER_LOCK_KEY = 727_002

#: How often a standby asks for the lock again (seconds).
STANDBY_RETRY_SECONDS = 5

#: The lock connection's own limits: a server that stops answering is found
#: out in seconds (TCP keepalives), not after the kernel's two hours, and no
#: query on it waits long.
LOCK_CONNECTION_OPTIONS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "options": "-c statement_timeout=5000",
    "application_name": "billing-scheduler-lock",
}

#: Whether this connection's backend holds the leader lock. pg_try_advisory_lock
#: of one bigint key shows in pg_locks as classid = high 32 bits, objid = low 32
#: bits, objsubid = 1, in the current database.
HELD_QUERY = """
SELECT EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid = %(high)s AND objid = %(low)s AND objsubid = 1
)
"""


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


class Leadership:
    """The leader lock: held from a successful :meth:`try_acquire` until
    :meth:`release`, the process's end, or the loss of its connection.

    Parameters:
      database_url: ``postgresql://...`` (advisory lock) or ``sqlite:///...`` (file lock).
    """

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._conn = None
        self._file = None
        self._held = False
        self._lock = threading.Lock()  # the watchdog and job threads share the connection
        self._database_down = False

    @property
    def on_postgres(self) -> bool:
        return urlparse(self.database_url).scheme.startswith("postgres")

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; False while another process
        leads or the database cannot be reached (logged once per outage)."""
        with self._lock:
            if self.on_postgres:
                self._held = self._try_acquire_postgres()
            else:
                self._held = self._try_acquire_file()
            return self._held

    def _try_acquire_postgres(self) -> bool:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg2.connect(self.database_url, **LOCK_CONNECTION_OPTIONS)
                self._conn.autocommit = True
            with self._conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (PG_LEADER_LOCK_KEY,))
                acquired = bool(cur.fetchone()[0])
        except psycopg2.Error as exc:
            self._close_connection()
            if not self._database_down:
                log.warning("database unreachable; cannot compete for leadership until it answers",
                            error=_one_line(exc))
            self._database_down = True
            return False
        if self._database_down:
            log.info("database reachable again; competing for leadership")
        self._database_down = False
        return acquired

    def _try_acquire_file(self) -> bool:
        path = self.database_url.split(":///", 1)[-1] + ".scheduler.lock"
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._file = self._file or open(path, "w")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def wait(self, *, stop: threading.Event | None = None, may_compete=lambda: True) -> bool:
        """Block until this process leads (True) or ``stop`` is set (False).
        Survives database outages: it keeps asking every
        :data:`STANDBY_RETRY_SECONDS`.

        Parameters:
          stop: ends the wait early (a SIGTERM).
          may_compete: asked before each attempt; False skips the attempt
            (e.g. while this process cannot reach the broker).
        """
        stop = stop or threading.Event()
        announced = False
        while not stop.is_set():
            competed = may_compete()
            if competed and self.try_acquire():
                log.info("scheduler leads")
                return True
            if competed and not announced and not self._database_down:
                log.info("another scheduler leads; standing by")
                announced = True
            stop.wait(STANDBY_RETRY_SECONDS)
        return False

    def still_held(self) -> bool:
        """Whether this process still holds the lock, asked of the server:
        False once the lock's connection is gone (the lock went with it) or
        its backend no longer holds the lock. A connection that fails the
        question is closed, so the lock is surely released."""
        with self._lock:
            if not self._held:
                return False
            if not self.on_postgres:
                return self._file is not None and not self._file.closed
            try:
                with self._conn.cursor() as cur:
                    cur.execute(HELD_QUERY, {"high": PG_LEADER_LOCK_KEY >> 32, "low": PG_LEADER_LOCK_KEY & 0xFFFFFFFF})
                    held = bool(cur.fetchone()[0])
            except (psycopg2.Error, AttributeError) as exc:  # AttributeError: no connection at all
                log.warning("leader lock connection lost", error=_one_line(exc))
                self._close_connection()
                held = False
            self._held = held
            return held

    def release(self) -> None:
        """Give the lock up (closing its connection or file releases it)."""
        with self._lock:
            self._held = False
            self._close_connection()
            if self._file is not None:
                self._file.close()
                self._file = None

    def _close_connection(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.close()
        except psycopg2.Error:  # already broken; closing is all we wanted
            pass
        self._conn = None


class Watchdog:
    """Decides when a leader must step down: the lock is lost, or the broker
    has been unreachable for longer than ``broker_grace`` seconds.

    Jobs report each enqueue's outcome with :meth:`broker_ok` /
    :meth:`broker_failed`.

    Parameters:
      leadership: the lock to verify.
      broker_grace: seconds of failed enqueues (with none succeeding) after
        which the leader gives way (the health interval).
    """

    def __init__(self, *, leadership: Leadership, broker_grace: float) -> None:
        self.leadership = leadership
        self.broker_grace = broker_grace
        self._broker_failing_since: float | None = None
        self._lock = threading.Lock()

    def broker_ok(self) -> None:
        """An enqueue reached the broker."""
        with self._lock:
            self._broker_failing_since = None

    def broker_failed(self) -> None:
        """An enqueue could not reach the broker."""
        with self._lock:
            if self._broker_failing_since is None:
                self._broker_failing_since = time.monotonic()

    def broker_failing_for(self) -> float:
        """Seconds since the first failed enqueue with no success after it (0: none)."""
        with self._lock:
            since = self._broker_failing_since
        return 0.0 if since is None else time.monotonic() - since

    def reason_to_step_down(self) -> str:
        """Why this leader must stop leading now ('' while it may go on)."""
        if not self.leadership.still_held():
            return "leader lock lost"
        failing_for = self.broker_failing_for()
        if failing_for > self.broker_grace:
            return f"broker unreachable for {failing_for:.0f}s"
        return ""
