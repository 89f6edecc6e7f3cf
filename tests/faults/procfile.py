"""The production stack exactly as the Procfile documents it, under a
process manager, for the fault suite.

The Procfile is read at run time: its ``release`` line runs once, and its
``web``, ``worker`` and ``scheduler`` lines run through ``sh -c`` as a
process manager (honcho, foreman, systemd ``ExecStart=``) runs them. When the
worker line changes (``billing worker ...`` instead of ``dramatiq tasks``),
the suite runs the new command with no change here.

:class:`ProcessManager` restarts a top-level Procfile process that exits, as
systemd does with ``Restart=always`` (after ``RestartSec``, 100 ms by
default). It watches only the top-level processes: what happens to their
children (a worker process killed inside the worker command) is the
command's own business, and the suite checks that the command handled it.

Production timings: no interval, timeout or backoff is set here (and any set
in the suite's own environment is removed), so the processes run with the
defaults an operator gets.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.e2e.stack import all_contacts, free_port
from tests.faults.services import alive, descendants_of, kill_tree, wait_gone

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]
PROCFILE = ROOT / "Procfile"

#: systemd's default RestartSec.
RESTART_SECONDS = 0.1
#: How often the manager looks at its processes.
WATCH_SECONDS = 0.1
#: A stopping process gets this long after SIGTERM before SIGKILL.
STOP_TIMEOUT = 15
STARTUP_TIMEOUT = 60

#: Tuning variables the product reads: never passed down from the suite's own
#: environment (a developer's shell or CI may set some), so every process runs
#: with the product's defaults.
TUNING_VARIABLES = (
    "RECOVERY_INTERVAL_SECONDS", "HEALTH_INTERVAL_SECONDS", "CLAIM_TIMEOUT_SECONDS",
    "SEND_RETRY_MIN_BACKOFF_MS", "SEND_RETRY_MAX_BACKOFF_MS", "DISPATCH_HORIZON_SECONDS",
    "DISPATCH_BATCH_SIZE", "DRAMATIQ_WORKER_TIMEOUT", "dramatiq_worker_timeout", "BILLING_ADMIN_TOKEN",
    "PUBLIC_URL", "HOST", "PORT", "WEB_CONCURRENCY", "WORKER_PROCESSES", "WORKER_THREADS",
)

#: The worker's size, passed as the Procfile's documented knobs (their
#: Procfile defaults, stated so the duplicate bound of a kill is known).
WORKER_PROCESSES = 2
WORKER_THREADS = 8


def read_procfile(path: Path = PROCFILE) -> dict[str, str]:
    """``name: command`` lines of a Procfile (comments and blanks skipped)."""
    commands = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line.strip())
        if match and not line.lstrip().startswith("#"):
            commands[match.group(1)] = match.group(2).strip()
    return commands


@dataclass
class Managed:
    """One top-level Procfile process and its history."""

    name: str
    command: str
    process: subprocess.Popen | None = None
    starts: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, pid)
    exits: list[tuple[float, int, int]] = field(default_factory=list)  # (monotonic, pid, returncode)
    restart_due: float = 0.0
    #: systemd's RestartSec for this process.
    restart_seconds: float = RESTART_SECONDS

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def restarts(self) -> int:
        return max(0, len(self.starts) - 1)


class ProcfileStack:
    """web + worker + scheduler from the Procfile, on the given database and broker.

    Parameters:
      workdir: logs (``<name>.log``) and the processes' working directory.
      database_url, broker_url: the private PostgreSQL database and RabbitMQ vhost.
      schedulers: how many scheduler processes (the README: a second one stands by).
    """

    def __init__(self, *, workdir: Path, database_url: str, broker_url: str, schedulers: int = 1) -> None:
        self.workdir = workdir
        self.commands = read_procfile()
        missing = {"web", "worker", "scheduler"} - set(self.commands)
        assert not missing, f"the Procfile has no {', '.join(sorted(missing))} line: {self.commands}"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in TUNING_VARIABLES}
        env.update({
            "DATABASE_URL": database_url, "BROKER_URL": broker_url, "PORT": str(self.port),
            "WORKER_PROCESSES": str(WORKER_PROCESSES), "WORKER_THREADS": str(WORKER_THREADS),
            "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1",
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        })
        self.env = env
        self.managed: dict[str, Managed] = {"web": Managed("web", self.commands["web"]),
                                            "worker": Managed("worker", self.commands["worker"])}
        for index in range(schedulers):
            name = "scheduler" if index == 0 else f"scheduler.{index + 1}"
            self.managed[name] = Managed(name, self.commands["scheduler"])
        self._lock = threading.RLock()
        self._running = False
        self._watcher: threading.Thread | None = None

    # --- the process manager -------------------------------------------------
    def release(self) -> None:
        """The Procfile's release phase (``billing db upgrade``), once."""
        command = self.commands.get("release")
        if command:
            result = subprocess.run(["sh", "-c", command], env=self.env, cwd=self.workdir, capture_output=True,
                                    text=True, timeout=120)
            assert result.returncode == 0, f"release `{command}` failed: {result.stdout}{result.stderr}"

    def _spawn(self, item: Managed) -> None:
        log = open(self.workdir / f"{item.name}.log", "a")
        log.write(f"\n=== {time.strftime('%H:%M:%S')} start: {item.command}\n")
        log.flush()
        # ``exec`` so the top-level pid is the command itself, as honcho/systemd run it.
        item.process = subprocess.Popen(["sh", "-c", f"exec {item.command}"], env=self.env, cwd=self.workdir,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        item.starts.append((time.monotonic(), item.process.pid))

    def start(self, *, wait: bool = True) -> None:
        """Release, then every process under the manager; ``wait``: until web answers."""
        self.release()
        with self._lock:
            self._running = True
            for item in self.managed.values():
                self._spawn(item)
        self._watcher = threading.Thread(target=self._watch, name="process-manager", daemon=True)
        self._watcher.start()
        if wait:
            self.wait_healthy()

    def _watch(self) -> None:
        """Restart=always: a top-level process that exits is started again."""
        while True:
            with self._lock:
                if not self._running:
                    return
                for item in self.managed.values():
                    code = item.process.poll() if item.process else None
                    if item.process is not None and code is not None:
                        item.exits.append((time.monotonic(), item.process.pid, code))
                        # Children of a dead leader (a worker process whose
                        # master was killed) must not outlive it.
                        self._kill_leftovers(item.process.pid)
                        item.process = None
                        item.restart_due = time.monotonic() + item.restart_seconds
                    if item.process is None and item.restart_due <= time.monotonic():
                        self._spawn(item)
            time.sleep(WATCH_SECONDS)

    @staticmethod
    def _kill_leftovers(pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> None:
        with self._lock:
            self._running = False
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        items = [i for i in self.managed.values() if i.process is not None]
        for item in items:
            if item.process.poll() is None:
                try:
                    os.killpg(item.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_TIMEOUT
        for item in items:
            try:
                item.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            pids = [item.process.pid, *descendants_of(item.process.pid)]
            self._kill_leftovers(item.process.pid)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            item.process.wait()

    # --- faults ----------------------------------------------------------------
    def worker_processes(self, name: str = "worker") -> list[int]:
        """The worker command's working processes: the leaves of its process
        tree (``dramatiq tasks``: the forked workers; a supervisor's children,
        or their children, alike)."""
        top = self.managed[name].pid
        if top is None or not alive(top):
            return []
        tree = descendants_of(top)
        return [pid for pid in tree if not descendants_of(pid)]

    def kill_worker_process(self, name: str = "worker") -> int:
        """kill -9 of one working process of the worker command; returns its pid."""
        leaves = self.worker_processes(name)
        assert leaves, f"the {name} command has no child process to kill:\n{self.log(name)}"
        os.kill(leaves[0], signal.SIGKILL)
        return leaves[0]

    def kill_group(self, name: str) -> list[int]:
        """kill -9 of a top-level process and everything under it (the whole
        group: a supervisor too). The process manager starts it again."""
        pids: list[int] = []
        with self._lock:  # the manager restarts it only once it is all gone
            item = self.managed[name]
            if item.process is not None:
                pids = kill_tree(item.process.pid)
                self._kill_leftovers(item.process.pid)
                wait_gone(pids, STOP_TIMEOUT)
        return pids

    def alive(self, name: str) -> bool:
        item = self.managed[name]
        return item.process is not None and item.process.poll() is None

    # --- logs ------------------------------------------------------------------
    def log(self, name: str, tail: int = 4000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def logs(self, tail: int = 2500) -> str:
        return "\n".join(f"--- {name}\n{self.log(name, tail)}" for name in self.managed)

    # --- CLI and HTTP -----------------------------------------------------------
    def cli(self, *args: str) -> str:
        result = subprocess.run([str(BIN / "billing"), *args], env=self.env, cwd=self.workdir, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, f"billing {shlex.join(args)} failed ({result.returncode}): {result.stderr}"
        return result.stdout

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                if requests.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() >= deadline:
                raise AssertionError(f"web did not answer /health in {STARTUP_TIMEOUT}s\n{self.logs()}")
            time.sleep(0.2)

    def post(self, path: str, body: dict, *, key: str, timeout: float = 60) -> requests.Response:
        return requests.post(f"{self.base_url}/api/v1/billing/{path}", json=body,
                             headers={"X-Billing-API-Key": key}, timeout=timeout)

    def get(self, path: str, *, key: str, timeout: float = 30) -> requests.Response:
        return requests.get(f"{self.base_url}/api/v1/billing/{path}", headers={"X-Billing-API-Key": key},
                            timeout=timeout)

    def contacts(self, campaign_id: str, *, key: str) -> list[dict]:
        return all_contacts(self.get, campaign_id, key=key)
