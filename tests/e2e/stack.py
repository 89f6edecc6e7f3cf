"""Running the product as its users do: real processes, real HTTP, the CLI.

Two stacks:
- embedded: ``billing run`` on a SQLite file (StubBroker and worker inside);
- production: gunicorn (2 workers) + ``dramatiq tasks`` (2 processes) +
  ``billing scheduler`` on PostgreSQL and RabbitMQ.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]

#: Dramatiq's queues (and their delay/dead-letter twins) purged before a run,
#: so messages of an earlier run cannot touch this one.
BROKER_QUEUES = ("dispatch", "send")

STARTUP_TIMEOUT = 30

#: The scheduler's recovery runs this often in tests (30 s by default).
RECOVERY_INTERVAL_SECONDS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def purge_rabbitmq(url: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        for name in BROKER_QUEUES:
            for queue in (name, f"{name}.DQ", f"{name}.XQ"):
                channel = connection.channel()
                try:
                    channel.queue_delete(queue)
                except pika.exceptions.ChannelClosedByBroker:
                    pass
    finally:
        connection.close()


class Stack:
    """Processes of one deployment, plus helpers to drive and inspect it."""

    def __init__(self, *, kind: str, env: dict, workdir: Path) -> None:
        self.kind = kind
        self.env = {**os.environ, **env, "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1",
                    "RECOVERY_INTERVAL_SECONDS": str(RECOVERY_INTERVAL_SECONDS)}
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen] = {}
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # No keep-alive session: gunicorn closes idle connections after a couple
        # of seconds, and a request racing that close gets a reset.
        self.session = requests

    # --- CLI -------------------------------------------------------------
    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(BIN / "billing"), *args], env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(f"billing {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def create_tenant(self, name: str, *, messages_per_minute: float) -> str:
        """Tenant + templates + sandbox instance + key, through the CLI; returns the key."""
        self.cli("tenant", "create", name, "--business-hours", "always", "--holidays", "none")
        self.cli(
            "template", "create", "--tenant", name, "--type", "overdue", "--name", "padrao", "--strategy", "sequential",
            "--variation", "Olá {{nome_cliente}}, sua fatura de {{valor}} venceu há {{dias_atraso}} dias.",
            "--variation", "Oi {{nome_cliente}}! Consta em aberto {{valor}} (vencimento {{data_vencimento}}).",
            "--variation", "{{nome_cliente}}, lembrete: {{valor}} vencido em {{data_vencimento}}.{{#if codigo_pix}} PIX: {{codigo_pix}}{{/if}}",
        )
        self.cli("instance", "create", "--tenant", name, "--provider", "sandbox", "--name", "sandbox",
                 "--messages-per-minute", str(messages_per_minute))
        return self.cli("apikey", "create", "--tenant", name).stdout.strip().splitlines()[-1]

    def python(self, code: str) -> subprocess.CompletedProcess:
        """Run ``code`` in a fresh interpreter with the stack's environment
        (another Python service using the library)."""
        result = subprocess.run([sys.executable, "-c", code], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise AssertionError(f"python failed ({result.returncode}): {result.stderr}")
        return result

    def outbox(self) -> list[dict]:
        """The sandbox gateway's messages, read through ``billing outbox --json``."""
        return [json.loads(line) for line in self.cli("outbox", "--json").stdout.splitlines() if line.strip()]

    def outbox_counts(self) -> collections.Counter:
        """How many sandbox messages each contact id got."""
        return collections.Counter(message["contact_id"] for message in self.outbox())

    # --- processes -----------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "w")
        self.processes[name] = subprocess.Popen(
            args, env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start(self) -> None:
        self.cli("db", "upgrade")
        if self.kind == "embedded":
            self._spawn("run", [str(BIN / "billing"), "run", "--port", str(self.port)])
        else:
            self._spawn("web", [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{self.port}", "--workers", "2",
                                "--threads", "4", "web:create_app()"])
            self.start_worker()
            self._spawn("scheduler", [str(BIN / "billing"), "scheduler"])
        self.wait_healthy()

    def start_worker(self, name: str = "worker") -> None:
        self._spawn(name, [str(BIN / "dramatiq"), "tasks", "--processes", "2", "--threads", "4"])

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise AssertionError(f"{name} exited early:\n{self.log(name)}")
            try:
                if self.session.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or still booting
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.kind} stack did not answer /health in {STARTUP_TIMEOUT}s")

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for name, process in self.processes.items():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()

    # --- API -------------------------------------------------------------
    def post(self, path: str, body: dict, *, key: str, headers: dict | None = None) -> requests.Response:
        return self.session.post(f"{self.base_url}/api/v1/billing/{path}", json=body,
                                 headers={"X-Billing-API-Key": key, **(headers or {})}, timeout=60)

    def worker_log_lines(self) -> list[dict]:
        """JSON log lines of the processes that run actors."""
        names = ["run"] if self.kind == "embedded" else [n for n in self.processes if n.startswith("worker")]
        lines = []
        for name in names:
            for line in (self.workdir / f"{name}.log").read_text().splitlines():
                try:
                    lines.append(json.loads(line))
                except ValueError:  # banner, plain logging, or a line still being written
                    continue
        return lines

    def get(self, path: str, *, key: str) -> requests.Response:
        return self.session.get(f"{self.base_url}/api/v1/billing/{path}", headers={"X-Billing-API-Key": key}, timeout=30)

    def status(self, queue_id: str, *, key: str) -> dict:
        response = self.get(f"queue/{queue_id}/status", key=key)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for(self, queue_id: str, *, key: str, statuses=("completed",), timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        status = {}
        while time.monotonic() < deadline:
            status = self.status(queue_id, key=key)
            if status["status"] in statuses:
                return status
            time.sleep(0.3)
        logs = "\n".join(f"--- {name}\n{self.log(name)}" for name in self.processes)
        raise AssertionError(f"queue still {status.get('status')} after {timeout}s: {status}\n{logs}")
