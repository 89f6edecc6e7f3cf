"""RabbitMQ down, on a private RabbitMQ node this test starts, stops and starts
again (never the machine's): ``billing worker`` logs one line per reconnect
attempt per process, with a growing backoff (Dramatiq and pika alone wrote
~2,700 lines in 40 s for two processes); the scheduler logs one line per job
run, steps down after a health interval without the broker, and leads again
when it returns; work flows again afterwards.

Production timings, except the scheduler's job intervals: recovery every 1 s
and health checks (hence the broker grace) every 5 s instead of 30 s.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import postgres_database
from tests.e2e.stack import BIN, Stack, wait_until
from tests.factories import phones
from tests.faults.services import PrivateRabbitMQ, make_base_dir
from tests.waiting import stays

pytestmark = pytest.mark.postgres

#: How long RabbitMQ stays down while the logs are counted (an observation
#: window, not a wait for a condition).
OUTAGE_SECONDS = 20
#: The scheduler's health interval in this test: how long its leader may go
#: without the broker before it steps down.
HEALTH_INTERVAL_SECONDS = 5
#: tasks.broker.RECONNECT_BACKOFF_MAX_SECONDS: the longest wait between two
#: reconnect attempts, so the longest a worker takes to notice RabbitMQ is back.
RECONNECT_BACKOFF_MAX_SECONDS = 15
#: Dramatiq's consumer restart delay (dramatiq_restart_delay, 3 s) before the first attempt.
FIRST_ATTEMPT_AFTER = 3
#: What a worker process may log about a RabbitMQ outage.
OUTAGE_EVENTS = {"broker connection lost; reconnecting", "broker unreachable"}
STARTUP_TIMEOUT = 60


@pytest.fixture
def private_rabbitmq():
    """The fault suite's private node (own name, ports and directory, a child
    of this process; every stop checks it is the suite's own, never the
    machine's). A node that cannot start is a failure, not a skip."""
    base = make_base_dir()
    server = PrivateRabbitMQ(base)
    try:
        server.init().start()
        yield server
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


def _lines(path: Path) -> list[str]:
    """The log's non-blank lines."""
    return [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _json(line: str) -> dict | None:
    try:
        parsed = json.loads(line)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def test_rabbitmq_down_is_a_line_per_reconnect_attempt_and_the_scheduler_steps_down(private_rabbitmq, tmp_path):
    with postgres_database() as database_url:
        stack = Stack(kind="production", env={"DATABASE_URL": database_url, "BROKER_URL": private_rabbitmq.url()},
                      workdir=tmp_path,
                      extra_env={"RECOVERY_INTERVAL_SECONDS": 1, "HEALTH_INTERVAL_SECONDS": HEALTH_INTERVAL_SECONDS})
        try:
            stack.cli("db", "upgrade")
            stack.create_tenant("acme", messages_per_minute=60_000)
            stack._spawn("worker", [str(BIN / "billing"), "worker", "--processes", "2", "--threads", "2"])
            stack.start_scheduler()
            worker_log, scheduler_log = tmp_path / "worker.log", tmp_path / "scheduler.log"  # Stack's log files

            def events(name: str) -> list[dict]:
                return stack.log_lines(name)

            wait_until(lambda: sum(e.get("event") == "worker process ready" for e in events("worker")) == 2,
                       timeout=STARTUP_TIMEOUT, message=stack.logs)
            wait_until(lambda: any(e.get("event") == "scheduler job ran" and e.get("job") == "recover"
                                   for e in events("scheduler")), timeout=STARTUP_TIMEOUT, message=stack.logs)
            # The first health check logs the instance coming up: let it
            # happen before the count, which is of outage lines only.
            wait_until(lambda: any(e.get("event") == "instance health changed" for e in events("worker")),
                       timeout=STARTUP_TIMEOUT, message=stack.logs)

            # RabbitMQ goes away; count what each process writes meanwhile.
            worker_before, scheduler_before = len(_lines(worker_log)), len(_lines(scheduler_log))
            private_rabbitmq.stop()
            down_at = time.monotonic()
            # Per process: the loss, then attempts after FIRST_ATTEMPT_AFTER s
            # and backoffs of 1, 2, 4, 8, 15... s; one spare line each.
            attempts = sum(1 for t in (3, 4, 6, 10, 18, 33, 48, 63) if t <= OUTAGE_SECONDS)
            bound = 2 * (1 + attempts + 1)
            # The outage itself: time must pass, and the log must stay within bound all along.
            stays(lambda: len(_lines(worker_log)) - worker_before <= bound,
                  seconds=max(0.0, down_at + OUTAGE_SECONDS - time.monotonic()), interval=0.5,
                  message=lambda: "\n".join(_lines(worker_log)[worker_before:][:60]))
            worker_lines = _lines(worker_log)[worker_before:]
            scheduler_lines = _lines(scheduler_log)[scheduler_before:]

            parsed = [_json(line) for line in worker_lines]
            assert all(p is not None and p["event"] in OUTAGE_EVENTS for p in parsed), "\n".join(worker_lines)
            assert len(worker_lines) <= bound, "\n".join(worker_lines)
            by_process: dict[int, list[dict]] = {}
            for p in parsed:
                by_process.setdefault(p["pid"], []).append(p)
            assert len(by_process) == 2, "\n".join(worker_lines)
            for lines in by_process.values():
                retries = [p["retry_in"] for p in lines if p["event"] == "broker unreachable"]
                assert len(retries) >= 3 and retries == sorted(retries) and retries[-1] > retries[0], lines

            # The scheduler: one line per failed job run, no traceback; it gave
            # way after the health interval and ran no job since.
            scheduler_events = [_json(line) for line in scheduler_lines]
            assert all(e is not None for e in scheduler_events), "\n".join(scheduler_lines)
            assert stack.alive("scheduler")
            names = [e["event"] for e in scheduler_events]
            assert "scheduler steps down" in names, "\n".join(scheduler_lines)
            stepped = names.index("scheduler steps down")
            assert scheduler_events[stepped]["reason"].startswith("broker unreachable")
            assert set(names[:stepped]) <= {"scheduler job failed: broker unreachable", "scheduler job ran"}
            assert "scheduler job failed: broker unreachable" in names[:stepped]
            assert not any(name.startswith("scheduler job") for name in names[stepped + 1:]), "\n".join(scheduler_lines)
            print(f"\n[rabbitmq down {OUTAGE_SECONDS}s] worker (2 processes): {len(worker_lines)} lines; "
                  f"scheduler: {len(scheduler_lines)} lines ({names.count('scheduler job failed: broker unreachable')} "
                  f"failed job runs, stepped down)")

            # RabbitMQ is back: every worker process reconnects within the
            # longest backoff, the scheduler leads again, work flows.
            private_rabbitmq.start()
            back_at = time.monotonic()
            reconnected = lambda: sum(e.get("event") == "broker reconnected" for e in events("worker")) == 2  # noqa: E731
            wait_until(reconnected, timeout=RECONNECT_BACKOFF_MAX_SECONDS + 10, message=stack.logs)
            workers_back = time.monotonic() - back_at

            def leads_again() -> bool:
                tail = events("scheduler")
                names = [e.get("event") for e in tail]
                last_down = len(names) - 1 - names[::-1].index("scheduler steps down")
                return "scheduler job ran" in names[last_down:]

            wait_until(leads_again, timeout=30, message=lambda: stack.log("scheduler"))
            scheduler_back = time.monotonic() - back_at
            numbers = phones(4)
            contacts = [{"nome_cliente": f"C{i}", "telefone": phone, "valor": 10.0, "data_vencimento": "2025-01-15"}
                        for i, phone in enumerate(numbers)]
            stack.start_campaign_as_library(external_id="after-outage", contacts=contacts)
            counts = wait_until(lambda: (found := stack.outbox_counts()) and len(found) == len(numbers) and found,
                                timeout=60, message=stack.logs)
            assert sorted(counts.values()) == [1] * len(numbers)
            print(f"[rabbitmq back] workers reconnected {workers_back:.1f}s and the scheduler ran jobs "
                  f"{scheduler_back:.1f}s after RabbitMQ answered again")
            assert "Traceback" not in stack.log("scheduler")
        finally:
            stack.stop()
