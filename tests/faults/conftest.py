"""Fixtures of the fault suite: private PostgreSQL and RabbitMQ servers (one
each for the module, never the machine's), and per scenario a fresh
database, a fresh vhost, the fake gateway and the Procfile's stack.

The figures of every scenario are collected and printed as one table at the
end of the session (so ``make test`` shows them without ``-s``), and written
to ``faults.json`` in the session's base temporary directory.
"""
from __future__ import annotations

import atexit
import json
import secrets
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from tests.conftest import service_missing
from tests.faults.gateway import FaultyEvolution
from tests.faults.harness import GATEWAY_KEY, INSTANCES, FaultRun
from tests.faults.procfile import ProcfileStack
from tests.faults.services import PrivatePostgres, PrivateRabbitMQ, ServiceUnavailable, make_base_dir

_RESULTS = pytest.StashKey[list]()


@dataclass
class Services:
    postgres: PrivatePostgres
    rabbitmq: PrivateRabbitMQ
    base: Path

    def ensure_running(self) -> None:
        """After a scenario that stopped one (and failed midway), start it again."""
        if not self.postgres.running():
            self.postgres.start()
        if not self.rabbitmq.ready():
            if self.rabbitmq.process is not None and self.rabbitmq.process.poll() is None:
                self.rabbitmq.wait_ready()
            else:
                self.rabbitmq.start()


@pytest.fixture(scope="module")
def fault_services():
    """A private PostgreSQL and a private RabbitMQ node for the module's
    scenarios (stopped when it ends, so they do not outlive the suite)."""
    base = make_base_dir()
    postgres = rabbitmq = None

    def cleanup() -> None:
        if rabbitmq is not None:
            rabbitmq.destroy()
        if postgres is not None:
            postgres.destroy()
        shutil.rmtree(base, ignore_errors=True)

    atexit.register(cleanup)  # should pytest itself be stopped before the finalizer runs
    try:
        try:
            postgres = PrivatePostgres(base).init()
            postgres.start()
        except (ServiceUnavailable, OSError, RuntimeError) as exc:
            service_missing("a private PostgreSQL", str(exc))
        try:
            rabbitmq = PrivateRabbitMQ(base).init()
            rabbitmq.start()
            # The CLI must reach the node (same Erlang cookie as the server).
            rabbitmq.ctl_run("status", timeout=60)
        except (ServiceUnavailable, OSError, RuntimeError) as exc:
            service_missing("a private RabbitMQ node", str(exc))
        yield Services(postgres, rabbitmq, base)
    finally:
        cleanup()
        atexit.unregister(cleanup)


@pytest.fixture
def fault_run(request, fault_services: Services, tmp_path: Path):
    """``fault_run(schedulers=1)``: a started stack on a fresh database and
    vhost, the fake gateway serving the tenant's four instances, the tenant."""
    fault_services.ensure_running()
    runs: list[FaultRun] = []
    cleanups = []

    def make(*, schedulers: int = 1) -> FaultRun:
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:  # rabbitmqctl takes a second or two
            vhost = pool.submit(fault_services.rabbitmq.add_vhost, f"faults-{secrets.token_hex(3)}")
            database_url = fault_services.postgres.create_database()
            broker_url = vhost.result()
        gateway = FaultyEvolution(api_key=GATEWAY_KEY, instances=list(INSTANCES)).start()
        cleanups.append(gateway.stop)
        stack = ProcfileStack(workdir=tmp_path, database_url=database_url, broker_url=broker_url,
                              schedulers=schedulers)
        cleanups.append(stack.stop)
        stack.start(wait=False)
        run = FaultRun(name=request.node.name.removeprefix("test_"), stack=stack, gateway=gateway,
                       database_url=database_url, workdir=tmp_path, started=started)
        run.create_tenant()  # while the processes boot
        stack.wait_healthy()
        runs.append(run)
        return run

    yield make
    for cleanup in reversed(cleanups):
        cleanup()
    fault_services.ensure_running()
    for run in runs:
        if run.figures.contacts:
            request.config.stash.setdefault(_RESULTS, []).append(asdict(run.figures))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    results = config.stash.get(_RESULTS, [])
    if not results:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fault suite figures")
    header = f"{'scenario':<40} {'result':<6} {'contacts':>8} {'sent':>6} {'failed':>6} {'lost':>5} " \
             f"{'open':>5} {'dups':>5} {'allowed':>7} {'s to final':>10}"
    write(header)
    for r in results:
        seconds = f"{r['seconds']:.1f}" if r["seconds"] is not None else ">60"
        write(f"{r['scenario']:<40} {'PASS' if r['passed'] else 'FAIL':<6} {r['contacts']:>8} {r['sent']:>6} "
              f"{r['failed']:>6} {r['lost']:>5} {r['open']:>5} {r['duplicates']:>5} {r['duplicate_bound']:>7} {seconds:>10}")
    path = Path(str(config._tmp_path_factory.getbasetemp())) / "faults.json" \
        if hasattr(config, "_tmp_path_factory") else None
    if path is not None:
        path.write_text(json.dumps(results, indent=2, default=str))
        write(f"(figures also in {path})")
