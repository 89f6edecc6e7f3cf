"""``billing worker``, the production worker: a killed worker process is
replaced while the others keep working, heartbeats show each process, and
SIGTERM stops everything. Plus the supervisor's restart backoff and stop
timeout, on stand-in children."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import structlog

from billing_cli.worker import RESTART_BACKOFF_MIN_SECONDS, Supervisor
from tests.conftest import postgres_database
from tests.e2e.stack import BIN, Stack, purge_rabbitmq, wait_until
from tests.factories import phones

#: How long the supervisor may take to stop on SIGTERM (its children's stop
#: timeout is 25 s; idle children stop in about a second).
STOP_TIMEOUT = 30
#: billing.workers.BEAT_INTERVAL, in seconds.
BEAT_SECONDS = 3


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (its parent has not reaped it yet).
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _workers(stack: Stack) -> dict[int, tuple]:
    """Live worker rows of the heartbeat table: pid -> (beat_at, info)."""
    rows = stack.sql("SELECT pid, beat_at, info FROM heartbeat WHERE kind = 'worker' AND stopped_at IS NULL")
    return {pid: (beat_at, json.loads(info)) for pid, beat_at, info in rows}


def _children_of(parent: int, stack: Stack) -> set[int]:
    return {pid for pid in _workers(stack) if _ppid(pid) == parent and _alive(pid)}


@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_a_killed_worker_process_is_replaced_and_sigterm_stops_all(rabbitmq_url, tmp_path):
    with postgres_database() as database_url:
        purge_rabbitmq(rabbitmq_url)  # takes this run's turn on the vhost
        stack = Stack(kind="production", env={"DATABASE_URL": database_url, "BROKER_URL": rabbitmq_url},
                      workdir=tmp_path)
        try:
            stack.cli("db", "upgrade")
            stack.create_tenant("acme", messages_per_minute=60_000)
            stack._spawn("worker", [str(BIN / "billing"), "worker", "--processes", "2", "--threads", "2"])
            supervisor = stack.processes["worker"]

            first = wait_until(lambda: (found := _children_of(supervisor.pid, stack)) and len(found) == 2 and found,
                               timeout=30, message=lambda: stack.log("worker"))
            assert all(info["threads"] == 2 and info["pid"] == pid and "send" in info["queues"]
                       for pid, (_, info) in _workers(stack).items())
            victim, survivor = sorted(first)
            survivor_beat = _workers(stack)[survivor][0]

            os.kill(victim, signal.SIGKILL)
            replaced = wait_until(
                lambda: (found := _children_of(supervisor.pid, stack) - first) and found,
                timeout=RESTART_BACKOFF_MIN_SECONDS + 20, message=lambda: stack.log("worker"))
            assert len(replaced) == 1
            assert _alive(survivor) and supervisor.poll() is None
            # The survivor kept beating all along.
            wait_until(lambda: _workers(stack)[survivor][0] > survivor_beat, timeout=BEAT_SECONDS * 3,
                       message="the surviving worker stopped beating")
            restarts = [line for line in stack.log_lines("worker") if line.get("event") == "worker process died; restarting"]
            assert [(line["child"], line["exit"]) for line in restarts] == [(victim, "SIGKILL")]

            # Work still flows through the surviving and the new process.
            numbers = phones(6)
            contacts = [{"nome_cliente": f"C{i}", "telefone": phone, "valor": 10.0, "data_vencimento": "2025-01-15"}
                        for i, phone in enumerate(numbers)]
            stack.start_campaign_as_library(external_id="after-kill", contacts=contacts)
            counts = wait_until(lambda: (found := stack.outbox_counts()) and len(found) == len(numbers) and found,
                                timeout=60, message=lambda: stack.log("worker"))
            assert sorted(counts.values()) == [1] * len(numbers)

            # SIGTERM to the supervisor alone stops every child, cleanly.
            children = _children_of(supervisor.pid, stack)
            started = time.monotonic()
            supervisor.send_signal(signal.SIGTERM)
            assert supervisor.wait(timeout=STOP_TIMEOUT) == 0
            print(f"\n[worker] pid {victim} killed, replaced by {replaced}; {survivor} kept running; "
                  f"SIGTERM stopped all in {time.monotonic() - started:.1f}s")
            assert not any(_alive(pid) for pid in children)
            stopped = dict(stack.sql("SELECT pid, stopped_at IS NOT NULL FROM heartbeat WHERE kind = 'worker'"))
            assert all(stopped[pid] for pid in children), stopped
        finally:
            stack.stop()


# --- the supervisor on stand-in children -----------------------------------

def _run_in_thread(supervisor: Supervisor) -> threading.Thread:
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    return thread


def test_children_dying_at_start_up_are_restarted_with_a_growing_backoff():
    supervisor = Supervisor(processes=1, command=[sys.executable, "-c", "raise SystemExit(3)"], stop_timeout=5)
    with structlog.testing.capture_logs() as logs:
        thread = _run_in_thread(supervisor)
        wait_until(lambda: sum(entry["event"] == "worker process died; restarting" for entry in logs) >= 3,
                   timeout=RESTART_BACKOFF_MIN_SECONDS * 7 + 10, message=lambda: str(logs))
        supervisor.request_stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
    restarts = [entry for entry in logs if entry["event"] == "worker process died; restarting"]
    delays = [entry["restart_in"] for entry in restarts[:3]]
    assert delays == [RESTART_BACKOFF_MIN_SECONDS, RESTART_BACKOFF_MIN_SECONDS * 2, RESTART_BACKOFF_MIN_SECONDS * 4]
    assert all(entry["exit"] == "exit 3" for entry in restarts)


def test_a_child_that_ignores_sigterm_is_killed_after_the_stop_timeout(tmp_path):
    ready = tmp_path / "ready"
    child = ("import pathlib, signal, time\n"
             "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
             f"pathlib.Path({str(ready)!r}).touch()\n"
             "time.sleep(120)\n")
    supervisor = Supervisor(processes=1, command=[sys.executable, "-c", child], stop_timeout=1)
    thread = _run_in_thread(supervisor)
    wait_until(ready.exists, timeout=20, message="the child did not start")
    pids = supervisor.children()
    started = time.monotonic()
    supervisor.request_stop()
    thread.join(timeout=15)
    assert not thread.is_alive()
    assert time.monotonic() - started < 10
    assert pids and not any(_alive(pid) for pid in pids)


def test_the_procfile_runs_the_supervisor():
    procfile = (Path(__file__).resolve().parents[2] / "Procfile").read_text()
    worker_line = next(line for line in procfile.splitlines() if line.startswith("worker:"))
    assert "billing worker" in worker_line and "dramatiq tasks" not in worker_line
    help_text = subprocess.run([str(BIN / "billing"), "worker", "--help"], capture_output=True, text=True, timeout=60)
    assert help_text.returncode == 0 and "--processes" in help_text.stdout
