"""Two ``billing scheduler`` processes across a PostgreSQL outage and restart,
on a private PostgreSQL server this test starts, stops and starts again (never
the machine's): the leader steps down when its lock connection dies, the
standby survives the outage, afterwards exactly one leads, and at no moment
did both run jobs.

Production timings, except the recovery job's interval (1 s instead of 30 s),
so that there are many job runs to check for overlaps.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import service_missing
from tests.e2e.stack import wait_until
from tests.faults.services import PrivatePostgres, ServiceUnavailable, make_base_dir

pytestmark = pytest.mark.postgres

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]

LEADS = "scheduler leads"
STANDS_BY = "another scheduler leads; standing by"
STEPS_DOWN = "scheduler steps down"
JOB_RAN = "scheduler job ran"
#: scheduler.leader.STANDBY_RETRY_SECONDS (a standby's retry period).
STANDBY_RETRY_SECONDS = 5
#: How long a process gets to stop on SIGTERM.
STOP_TIMEOUT = 20


def _utcnow() -> datetime:
    """Naive UTC, as the JSON logs' timestamps are read."""
    return datetime.now(UTC).replace(tzinfo=None)


@pytest.fixture
def private_postgres():
    """A PostgreSQL server of this test's own (own directory and port; the
    fault suite's, which refuses to stop anything else)."""
    base = make_base_dir()
    try:
        server = PrivatePostgres(base)
    except ServiceUnavailable as exc:
        service_missing("private PostgreSQL", str(exc))
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


def _events(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text().splitlines() if path.exists() else ():
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            parsed["at"] = datetime.fromisoformat(parsed["timestamp"].rstrip("Z"))
            lines.append(parsed)
    return lines


def _leadership(events: list[dict]):
    """Each event with whether its process leads once that event happened."""
    leading = False
    for event in events:
        if event["event"] in (LEADS, STEPS_DOWN):
            leading = event["event"] == LEADS
        yield event, leading


def _leading_now(events: list[dict]) -> bool:
    states = [leading for _event, leading in _leadership(events)]
    return bool(states) and states[-1]


def _assert_never_two_leaders(logs: dict[int, list[dict]]) -> None:
    """Every job run lies inside its process's leadership, and when job runs
    pass from one process to another, the second took the lead only after the
    first's last job."""
    for pid, events in logs.items():
        for event, leading in _leadership(events):
            if event["event"] == JOB_RAN:
                assert leading, f"process {pid} ran a job while not leading: {event}"
    runs = sorted((e["at"], pid) for pid, events in logs.items() for e in events if e["event"] == JOB_RAN)
    for (before, pid_before), (after, pid_after) in zip(runs, runs[1:]):
        if pid_after == pid_before:
            continue
        took_lead = max(e["at"] for e in logs[pid_after] if e["event"] == LEADS and e["at"] <= after)
        assert took_lead >= before, (
            f"process {pid_after} led since {took_lead} while {pid_before} still ran a job at {before}")


def test_schedulers_survive_a_postgres_outage_and_never_lead_together(private_postgres, tmp_path):
    env = {**os.environ, "DATABASE_URL": private_postgres.url(), "BROKER_URL": "", "LOG_FORMAT": "json",
           "PYTHONUNBUFFERED": "1", "RECOVERY_INTERVAL_SECONDS": "1"}
    subprocess.run([str(BIN / "billing"), "db", "upgrade"], env=env, cwd=ROOT, check=True, capture_output=True, timeout=120)
    processes: dict[int, subprocess.Popen] = {}
    paths: dict[int, Path] = {}
    try:
        for index in range(2):
            path = tmp_path / f"scheduler{index}.log"
            process = subprocess.Popen([str(BIN / "billing"), "scheduler"], env=env, cwd=ROOT,
                                       stdout=open(path, "w"), stderr=subprocess.STDOUT, start_new_session=True)
            processes[process.pid], paths[process.pid] = process, path

        def logs() -> dict[int, list[dict]]:
            return {pid: _events(path) for pid, path in paths.items()}

        def dump() -> str:
            return "\n".join(f"--- {pid}\n{path.read_text()[-3000:]}" for pid, path in paths.items())

        def one_leader() -> int | None:
            leading = [pid for pid, events in logs().items() if _leading_now(events)]
            return leading[0] if len(leading) == 1 else None

        leader = wait_until(one_leader, timeout=30, message=dump)
        standby = next(pid for pid in processes if pid != leader)
        wait_until(lambda: any(e["event"] == STANDS_BY for e in logs()[standby]), timeout=30, message=dump)
        wait_until(lambda: any(e["event"] == JOB_RAN for e in logs()[leader]), timeout=30, message=dump)

        # PostgreSQL goes away: the leader's lock connection dies with it.
        private_postgres.stop()
        stopped_at = time.monotonic()
        wait_until(lambda: any(e["event"] == STEPS_DOWN for e in logs()[leader]), timeout=15, message=dump)
        # The standby asks for the lock while the database is down (once every
        # STANDBY_RETRY_SECONDS), and lives.
        wait_until(lambda: sum(e["event"].startswith("database unreachable") for e in logs()[standby]) >= 1,
                   timeout=STANDBY_RETRY_SECONDS * 3, message=dump)
        assert all(process.poll() is None for process in processes.values()), dump()

        private_postgres.start()
        restarted_at = time.monotonic()
        restarted_wall = _utcnow()
        new_leader = wait_until(
            lambda: (pid := one_leader()) and any(e["event"] == JOB_RAN and e["at"] >= restarted_wall
                                                   for e in logs()[pid]) and pid,
            timeout=STANDBY_RETRY_SECONDS * 3, message=dump)
        took_over = time.monotonic() - restarted_at

        # The heartbeat table agrees: two live schedulers, one of them the leader.
        def heartbeat_leaders():
            conn = psycopg2.connect(private_postgres.url())
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pid, info FROM heartbeat WHERE kind = 'scheduler' AND stopped_at IS NULL")
                    rows = cur.fetchall()
            finally:
                conn.close()
            return rows if len(rows) == 2 and [pid for pid, info in rows if json.loads(info).get("leader")] == [new_leader] else None

        wait_until(heartbeat_leaders, timeout=10, message=dump)
        # Job runs go on for a couple of intervals, still from one process only.
        runs_after = lambda: sum(e["event"] == JOB_RAN and e["at"] >= restarted_wall for e in logs()[new_leader])  # noqa: E731
        wait_until(lambda: runs_after() >= 4, timeout=15, message=dump)

        assert all(process.poll() is None for process in processes.values()), dump()
        everything = logs()
        _assert_never_two_leaders(everything)
        for pid, events in everything.items():
            # A database outage is one line each way in the heartbeat, not one per beat.
            assert sum(e["event"].startswith("heartbeat failed") for e in events) == 1, dump()
            assert sum(e["event"] == "heartbeat resumed" for e in events) == 1, dump()
            assert "Traceback" not in paths[pid].read_text(), dump()
        print(f"\n[leader] pid {leader} led; PostgreSQL stopped {restarted_at - stopped_at:.1f}s; "
              f"pid {new_leader} ran jobs {took_over:.1f}s after PostgreSQL was back; "
              f"{'the same' if new_leader == leader else 'the standby'} leads")

        # Again, and the leader dies while the database is down: the standby,
        # which lived through the outage, takes over once it is back.
        survivor = next(pid for pid in processes if pid != new_leader)
        private_postgres.stop()
        wait_until(lambda: any(e["event"] == STEPS_DOWN and e["at"] >= restarted_wall for e in logs()[new_leader]),
                   timeout=15, message=dump)
        os.killpg(new_leader, signal.SIGKILL)
        processes.pop(new_leader).wait()
        private_postgres.start()
        back_at, back_wall = time.monotonic(), _utcnow()
        wait_until(lambda: _leading_now(logs()[survivor])
                   and any(e["event"] == JOB_RAN and e["at"] >= back_wall for e in logs()[survivor]),
                   timeout=STANDBY_RETRY_SECONDS * 3, message=dump)
        print(f"[leader] after a second outage with pid {new_leader} killed, pid {survivor} ran jobs "
              f"{time.monotonic() - back_at:.1f}s after PostgreSQL was back")
        _assert_never_two_leaders(logs())
        assert "Traceback" not in paths[survivor].read_text(), dump()

        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            assert process.wait(timeout=STOP_TIMEOUT) == 0, dump()
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
