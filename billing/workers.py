"""Which processes are alive: heartbeats, and the claims of the dead.

Every worker process (and the scheduler) registers a row in ``heartbeat`` and
beats every :data:`BEAT_INTERVAL`. A ``sending`` claim names the worker that
took it (``contact.claimed_by``), so a claim whose worker stopped beating is
released as soon as that is known, instead of after a long fixed timeout.

A process that cannot reach the database cannot beat either. So that a
database outage does not make every live worker look dead, a worker is taken
for dead only when its beat is older than :data:`DEAD_AFTER` *and* the
database server has been up for at least that long (PostgreSQL's
``pg_postmaster_start_time``); live workers beat again within one interval
after the database returns.
"""
from __future__ import annotations

import os
import socket
import threading
import uuid
from datetime import datetime, timedelta

import structlog

from billing.adapters.db import database, is_postgres
from billing.adapters.models import Heartbeat
from billing.clock import utcnow

log = structlog.get_logger(__name__)

#: How often a process says it is alive.
BEAT_INTERVAL = timedelta(seconds=3)

#: A process whose last beat is older than this is dead (several missed beats,
#: so a busy machine or a slow commit does not kill a live worker).
DEAD_AFTER = timedelta(seconds=15)

#: Stopped or dead processes' rows are deleted after this long.
FORGET_AFTER = timedelta(days=1)

_lock = threading.Lock()
_current_id: str = ""
_current_kind: str = "worker"


def new_id() -> str:
    """A process id unique across hosts and restarts: ``host:pid:random``."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def current_id() -> str:
    """This process's id ('' until :func:`register` ran): what claims name."""
    return _current_id


def register(*, kind: str, info: dict | None = None, now: datetime | None = None) -> str:
    """Record this process as alive and make it the owner of its claims.

    Parameters:
      kind: ``worker``, ``scheduler`` or ``web``.
      info: what ops should see about it (threads, queues...).
      now: the current time (tests).

    Returns:
      The process id claims will name.
    """
    global _current_id, _current_kind
    now = now or utcnow()
    with _lock:
        _current_kind = kind
        if not _current_id or not _current_id.split(":")[1] == str(os.getpid()):
            _current_id = new_id()  # a forked child gets its own id
        process_id = _current_id
    Heartbeat.insert(
        id=process_id, kind=kind, hostname=socket.gethostname()[:255], pid=os.getpid(),
        started_at=now, beat_at=now, info=info or {},
    ).on_conflict(conflict_target=[Heartbeat.id], update={Heartbeat.beat_at: now, Heartbeat.stopped_at: None}).execute()
    return process_id


#: Claims this process must give back once the database answers again:
#: (contact id, the worker id the claim names) of sends that broke while the
#: database was away.
_claims_to_release: set[tuple[int, str]] = set()


def give_back_claims(contact_ids: list[int], *, claimed_by: str, now: datetime) -> list[int]:
    """sending -> pending for these contacts while ``claimed_by`` still holds
    them, without spending an attempt: the send never reached the gateway.

    Parameters:
      contact_ids: the contacts.
      claimed_by: the worker id their claims name (another worker's claim,
        or a contact already moved on, is left alone).
      now: the time of the change (naive UTC).

    Returns:
      The contacts given back.
    """
    from billing import transitions  # transitions reaches the caps and callbacks
    from billing.adapters.models import Contact

    return transitions.move_contacts(
        transitions.GIVE_BACK, Contact.id.in_(contact_ids) & (Contact.claimed_by == claimed_by), now=now).ids


def release_claim_later(contact_id: int, *, claimed_by: str) -> None:
    """Remember to give back the claim of ``contact_id`` (named
    ``claimed_by``) at the next beat: the send that held it failed, and so
    did the give-back."""
    with _lock:
        _claims_to_release.add((contact_id, claimed_by))


def _release_remembered_claims(*, now: datetime) -> None:
    """Give back the claims remembered by :func:`release_claim_later`."""
    with _lock:
        pending = sorted(_claims_to_release)
    for claimed_by in {claimant for _, claimant in pending}:
        give_back_claims([contact_id for contact_id, claimant in pending if claimant == claimed_by],
                         claimed_by=claimed_by, now=now)
    with _lock:
        _claims_to_release.difference_update(pending)


def beat(process_id: str | None = None, *, now: datetime | None = None) -> None:
    """Say this process is still alive (re-registers a row that was forgotten),
    and give back the claims whose sends broke while the database was away."""
    process_id = process_id or _current_id
    if not process_id:
        return
    now = now or utcnow()
    _release_remembered_claims(now=now)
    updated = Heartbeat.update(beat_at=now, stopped_at=None).where(Heartbeat.id == process_id).execute()
    if not updated:
        Heartbeat.insert(id=process_id, kind=_current_kind, hostname=socket.gethostname()[:255], pid=os.getpid(),
                         started_at=now, beat_at=now).on_conflict_ignore().execute()


def set_info(info: dict, process_id: str | None = None) -> None:
    """Replace what ops see about this process (e.g. whether the scheduler leads)."""
    process_id = process_id or _current_id
    if process_id:
        Heartbeat.update(info=info).where(Heartbeat.id == process_id).execute()


def unregister(process_id: str | None = None, *, now: datetime | None = None) -> None:
    """A clean stop: the process's claims are released by recovery at once."""
    process_id = process_id or _current_id
    if not process_id:
        return
    Heartbeat.update(stopped_at=now or utcnow()).where(Heartbeat.id == process_id).execute()


def database_up_since() -> datetime | None:
    """When the database server (re)started, as naive UTC; None when unknown
    (SQLite: the file has no server, and its processes are this one)."""
    if not is_postgres():
        return None
    started = database.execute_sql(
        "SELECT pg_postmaster_start_time() AT TIME ZONE 'UTC'"
    ).fetchone()[0]
    return started


def live_ids(*, now: datetime | None = None, dead_after: timedelta = DEAD_AFTER) -> list[str] | None:
    """Ids of the processes that beat recently, or None when nobody can be
    declared dead yet (the database itself came up less than ``dead_after``
    ago, so a stale beat proves nothing)."""
    now = now or utcnow()
    up_since = database_up_since()
    if up_since is not None and now - up_since < dead_after:
        return None
    return [
        row_id
        for (row_id,) in Heartbeat.select(Heartbeat.id)
        .where(Heartbeat.stopped_at.is_null() & (Heartbeat.beat_at >= now - dead_after))
        .tuples()
    ]


def forget_old(*, now: datetime | None = None) -> int:
    """Delete rows of processes gone for longer than :data:`FORGET_AFTER`."""
    now = now or utcnow()
    return Heartbeat.delete().where(Heartbeat.beat_at < now - FORGET_AFTER).execute()


def processes(*, now: datetime | None = None) -> list[dict]:
    """Every known process with its state (``alive``, ``stopped``, ``dead``), for ops."""
    now = now or utcnow()
    rows = []
    for row in Heartbeat.select().order_by(Heartbeat.kind, Heartbeat.started_at):
        if row.stopped_at is not None:
            state = "stopped"
        elif row.beat_at >= now - DEAD_AFTER:
            state = "alive"
        else:
            state = "dead"
        rows.append({
            "id": row.id, "kind": row.kind, "hostname": row.hostname, "pid": row.pid, "state": state,
            "started_at": row.started_at, "beat_at": row.beat_at, "info": row.info,
        })
    return rows
