"""Running the product as its users do: real processes, real HTTP, the CLI.

Two stacks:
- embedded: ``billing run`` on a SQLite file (StubBroker and worker inside);
- production: gunicorn (2 workers) + ``billing worker`` (2 processes by
  default) + ``billing scheduler`` on PostgreSQL and RabbitMQ.

The worker's processes and threads and any extra environment (intervals,
timeouts, backoffs) are configurable, and single processes can be started,
stopped or killed, for tests of the sending discipline under failures.

A production stack uses the fixed queue names of one RabbitMQ vhost, so runs
on the same vhost take turns (:func:`hold_broker`, held from the purge before
``start()`` until ``stop()``).
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.conftest import postgres_database
from tests.waiting import wait_until  # noqa: F401 - the e2e tests import it from here

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]

STARTUP_TIMEOUT = 30

#: The scheduler's recovery runs this often in tests (30 s by default).
RECOVERY_INTERVAL_SECONDS = 2

#: How long a process gets to stop on SIGTERM before it is killed.
STOP_TIMEOUT = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def all_contacts(get, campaign_id: str, *, key: str) -> list[dict]:
    """Every contact of a campaign, page by page through the contacts API.

    Parameters:
      get: ``get(path, key=...)`` of a running stack's API.
      campaign_id: the campaign.
      key: an API key of its tenant.
    """
    results, page = [], 1
    while True:
        response = get(f"campaign/{campaign_id}/contacts?page={page}&page_size=1000", key=key)
        assert response.status_code == 200, response.text
        body = response.json()
        results.extend(body["results"])
        if page >= body["pages"]:
            return results
        page += 1


def postgres_rows(url: str, query: str, params: tuple = (), *, connect_timeout: int | None = None) -> list[tuple]:
    """Run one committed statement on PostgreSQL; its rows ([] for statements without a result).

    Parameters:
      url: the database URL.
      query: the statement (``%s`` placeholders).
      params: its parameters.
      connect_timeout: seconds to give up connecting (None: libpq's default).
    """
    import psycopg2

    conn = psycopg2.connect(url, **({"connect_timeout": connect_timeout} if connect_timeout else {}))
    try:
        with conn, conn.cursor() as cursor:
            cursor.execute(query, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        conn.close()


#: Held by the run that uses a vhost's queues: an exclusive queue, which only
#: one connection may declare and which goes when that connection closes (the
#: run ended, or its process died). Runs of the suite, of another suite and
#: the benchmarks take turns through it instead of taking each other's messages.
BROKER_LOCK_QUEUE = "billing-tests.lock"
#: How long a run waits for another to release the vhost.
BROKER_LOCK_TIMEOUT = 180
#: AMQP reply code of a queue another connection holds exclusively.
RESOURCE_LOCKED = 405

_broker_locks: dict = {}  # url -> the pika connection that holds the lock


def hold_broker(url: str, *, timeout: float = BROKER_LOCK_TIMEOUT) -> None:
    """Take this process's turn on the vhost of ``url`` (kept until
    :func:`release_broker` or the process ends); waits for another holder."""
    import pika

    held = _broker_locks.get(url)
    if held is not None and held.is_open:
        return
    params = pika.URLParameters(url)
    params.heartbeat = 0  # nobody services this connection; it must not be dropped as dead
    deadline = time.monotonic() + timeout
    while True:
        connection = pika.BlockingConnection(params)
        try:
            connection.channel().queue_declare(BROKER_LOCK_QUEUE, exclusive=True, auto_delete=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            connection.close()
            if exc.reply_code != RESOURCE_LOCKED:
                raise
        else:
            _broker_locks[url] = connection
            return
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"another run has held this RabbitMQ vhost for {timeout:g}s; wait for it to end "
                "or point BILLING_TEST_RABBITMQ_URL at a vhost of its own")
        time.sleep(1)


def release_broker(url: str) -> None:
    """End this process's turn on the vhost of ``url`` (if it had one)."""
    connection = _broker_locks.pop(url, None)
    if connection is not None and connection.is_open:
        connection.close()


def broker_queues() -> list[str]:
    """The RabbitMQ queues the actors use: each actor's queue, its delay queue
    (``.DQ``) and its dead-letter queue (``.XQ``), derived from the actors'
    declarations (a new queue in tasks/actors.py is purged too)."""
    from dramatiq.common import dq_name, xq_name

    from tasks.registry import queue_names

    return [queue for name in queue_names() for queue in (name, dq_name(name), xq_name(name))]


def purge_rabbitmq(url: str) -> None:
    """Delete the broker's queues (:func:`broker_queues`), so messages of an
    earlier run cannot touch this one: ids of another database would be
    claimed, checked or delivered in this one. Run it while no worker consumes
    them (a worker declares them again when it starts); it takes this
    process's turn on the vhost first, so it never deletes the queues of a run
    in progress."""
    import pika

    hold_broker(url)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        for queue in broker_queues():
            channel = connection.channel()
            try:
                channel.queue_delete(queue)
            except pika.exceptions.ChannelClosedByBroker:  # no such queue
                pass
    finally:
        connection.close()


def broker_consumers(url: str) -> dict[str, int]:
    """Consumers attached to the stack's queues (a worker of another run)."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    found = {}
    try:
        for queue in broker_queues():
            channel = connection.channel()
            try:
                consumers = channel.queue_declare(queue, passive=True).method.consumer_count
            except pika.exceptions.ChannelClosedByBroker:  # no such queue
                continue
            if consumers:
                found[queue] = consumers
    finally:
        connection.close()
    return found


def wait_for_idle_broker(url: str, *, timeout: float = BROKER_LOCK_TIMEOUT) -> None:
    """Take this process's turn on the vhost, then wait until no worker
    consumes its queues (a run that does not take turns). The tests purge and
    reuse the queues of one vhost: another run at the same time would take
    this run's messages, and its purge would delete our queues."""
    hold_broker(url, timeout=timeout)
    wait_until(lambda: not broker_consumers(url), timeout=timeout, interval=1,
               message=lambda: f"another run's workers consume this RabbitMQ vhost ({broker_consumers(url)}); "
                               "wait for it to end or point BILLING_TEST_RABBITMQ_URL at a vhost of its own")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a group we may not signal is not ours
        return False
    return True


class Stack:
    """Processes of one deployment, plus helpers to drive and inspect it.

    Parameters:
      kind: ``embedded`` or ``production``.
      env: DATABASE_URL, BROKER_URL and whatever else the processes need.
      workdir: where processes run and write their logs (``<name>.log``).
      worker_processes, worker_threads: ``billing worker --processes/--threads``.
      extra_env: applied last (overrides the test defaults, e.g.
        RECOVERY_INTERVAL_SECONDS or HEALTH_INTERVAL_SECONDS).
    """

    def __init__(self, *, kind: str, env: dict, workdir: Path, worker_processes: int = 2, worker_threads: int = 4,
                 extra_env: dict | None = None) -> None:
        self.kind = kind
        self.env = {**os.environ, **env, "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1",
                    "RECOVERY_INTERVAL_SECONDS": str(RECOVERY_INTERVAL_SECONDS)}
        self.env.update({name: str(value) for name, value in (extra_env or {}).items()})
        self.workdir = workdir
        self.worker_processes = worker_processes
        self.worker_threads = worker_threads
        self.processes: dict[str, subprocess.Popen] = {}
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # No keep-alive session: gunicorn closes idle connections after a couple
        # of seconds, and a request racing that close gets a reset.
        self.session = requests

    @property
    def database_url(self) -> str:
        return self.env["DATABASE_URL"]

    # --- CLI -------------------------------------------------------------
    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(BIN / "billing"), *args], env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(f"billing {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def create_templates(self, tenant: str) -> None:
        """The overdue template the e2e tests post against (three variations)."""
        self.cli(
            "template", "create", "--tenant", tenant, "--type", "overdue", "--name", "padrao", "--strategy", "sequential",
            "--variation", "Olá {{nome_cliente}}, sua fatura de {{valor}} venceu há {{dias_atraso}} dias.",
            "--variation", "Oi {{nome_cliente}}! Consta em aberto {{valor}} (vencimento {{data_vencimento}}).",
            "--variation", "{{nome_cliente}}, lembrete: {{valor}} vencido em {{data_vencimento}}.{{#if codigo_pix}} PIX: {{codigo_pix}}{{/if}}",
        )

    def create_key(self, tenant: str) -> str:
        """A new API key of ``tenant`` (the last line ``apikey create`` prints)."""
        return self.cli("apikey", "create", "--tenant", tenant).stdout.strip().splitlines()[-1]

    def create_tenant(self, name: str, *, messages_per_minute: float) -> str:
        """Tenant + templates + sandbox instance + key, through the CLI; returns the key."""
        self.cli("tenant", "create", name, "--business-hours", "always", "--holidays", "none")
        self.create_templates(name)
        self.cli("instance", "create", "--tenant", name, "--provider", "sandbox", "--name", "sandbox",
                 "--messages-per-minute", str(messages_per_minute))
        return self.create_key(name)

    def python(self, code: str) -> subprocess.CompletedProcess:
        """Run ``code`` in a fresh interpreter with the stack's environment
        (another Python service using the library)."""
        result = subprocess.run([sys.executable, "-c", code], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise AssertionError(f"python failed ({result.returncode}): {result.stderr}")
        return result

    def start_campaign_as_library(self, *, external_id: str, contacts: list[dict], tenant: str = "acme") -> None:
        """Create and start an overdue campaign the way another Python service
        does (``tasks.setup()``, ``create_campaign``, ``tasks.start_queue``), in
        a fresh interpreter with the stack's environment.

        Parameters:
          external_id: the campaign's external id.
          contacts: its contacts, as the API takes them.
          tenant: the tenant's name.
        """
        self.python(
            "import tasks\n"
            "tasks.setup()\n"
            "from billing.campaigns import create_campaign\n"
            "from billing.tenants import get_tenant\n"
            f"created = create_campaign(get_tenant({tenant!r}), template_type='overdue', "
            f"request={{'external_id': {external_id!r}, 'contacts': {contacts!r}}})\n"
            "tasks.start_queue(created.queue_id)\n")

    def outbox(self, *, tenant: str | None = None) -> list[dict]:
        """The sandbox gateway's messages (of one tenant, if given), read
        through ``billing outbox --json``."""
        args = ("--tenant", tenant) if tenant else ()
        return [json.loads(line) for line in self.cli("outbox", "--json", *args).stdout.splitlines() if line.strip()]

    def outbox_counts(self, *, tenant: str | None = None) -> collections.Counter:
        """How many sandbox messages each contact id got."""
        return collections.Counter(message["contact_id"] for message in self.outbox(tenant=tenant))

    # --- database --------------------------------------------------------
    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        """Run one statement on the stack's database (``%s`` placeholders);
        returns its rows ([] for statements without a result). Committed."""
        url = self.database_url
        if url.startswith("sqlite"):
            conn = sqlite3.connect(url.split(":///", 1)[1], timeout=30)
            try:
                cursor = conn.execute(query.replace("%s", "?"), params)
                rows = cursor.fetchall()
                conn.commit()
                return rows
            finally:
                conn.close()
        return postgres_rows(url, query, params)

    # --- processes -----------------------------------------------------
    def _spawn(self, name: str, args: list[str], *, env: dict | None = None) -> None:
        log = open(self.workdir / f"{name}.log", "w")
        self.processes[name] = subprocess.Popen(
            args, env={**self.env, **(env or {})}, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self) -> None:
        if self.kind != "embedded" and self.env.get("BROKER_URL"):
            hold_broker(self.env["BROKER_URL"])  # released by stop()
        self.cli("db", "upgrade")
        if self.kind == "embedded":
            self._spawn("run", [str(BIN / "billing"), "run", "--port", str(self.port)])
        else:
            self._spawn("web", [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{self.port}", "--workers", "2",
                                "--threads", "4", "web:create_app()"])
            self.start_worker()
            self.start_scheduler()
        self.wait_healthy()

    def start_worker(self, name: str = "worker", *, processes: int | None = None, threads: int | None = None) -> None:
        """``billing worker`` (every queue) as process ``name``, as the
        Procfile runs it: a supervisor of worker processes that replaces a
        dead one, delayed messages released every DRAMATIQ_WORKER_TIMEOUT ms
        (100 unless the environment says otherwise)."""
        timeout = self.env.get("DRAMATIQ_WORKER_TIMEOUT") or "100"
        self._spawn(name, [str(BIN / "billing"), "worker",
                           "--processes", str(processes or self.worker_processes),
                           "--threads", str(threads or self.worker_threads)],
                    env={"DRAMATIQ_WORKER_TIMEOUT": timeout})

    def start_scheduler(self, name: str = "scheduler") -> None:
        """``billing scheduler`` as process ``name`` (a second one stands by)."""
        self._spawn(name, [str(BIN / "billing"), "scheduler"])

    def alive(self, name: str) -> bool:
        return name in self.processes and self.processes[name].poll() is None

    def kill(self, name: str, sig: int = signal.SIGKILL, *, timeout: float = STOP_TIMEOUT) -> None:
        """Send ``sig`` to process ``name``'s whole group (a dramatiq master and
        its worker processes) and wait until the group is gone."""
        process = self.processes[name]
        if _group_alive(process.pid):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        deadline = time.monotonic() + timeout
        while _group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)

    def stop_process(self, name: str) -> None:
        """Stop process ``name`` gracefully (SIGTERM, then SIGKILL after STOP_TIMEOUT)."""
        self.kill(name, signal.SIGTERM)

    def wait_healthy(self) -> None:
        wait_until(self._healthy, timeout=STARTUP_TIMEOUT, message=f"{self.kind} stack did not answer /health")

    def _healthy(self) -> bool:
        """Whether /health answers 200; fails at once if a process exited."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited early:\n{self.log(name)}")
        try:
            return self.session.get(f"{self.base_url}/health", timeout=1).status_code == 200
        except requests.RequestException:  # not listening yet, or still booting
            return False

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def log_lines(self, name: str) -> list[dict]:
        """The JSON log lines process ``name`` wrote so far."""
        path = self.workdir / f"{name}.log"
        lines = []
        for line in (path.read_text().splitlines() if path.exists() else ()):
            try:
                parsed = json.loads(line)
            except ValueError:  # banner, plain logging, or a line still being written
                continue
            if isinstance(parsed, dict):
                lines.append(parsed)
        return lines

    def logs(self) -> str:
        """The tail of every process's log (for failure messages)."""
        return "\n".join(f"--- {name}\n{self.log(name)}" for name in self.processes)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for _name, process in self.processes.items():
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            # Children of a leader that died (a dramatiq worker process whose
            # master was killed) would outlive the stack.
            if _group_alive(process.pid):
                os.killpg(process.pid, signal.SIGKILL)
        self.processes.clear()
        if self.kind != "embedded" and self.env.get("BROKER_URL"):
            release_broker(self.env["BROKER_URL"])

    # --- API -------------------------------------------------------------
    def post(self, path: str, body: dict, *, key: str, headers: dict | None = None) -> requests.Response:
        return self.session.post(f"{self.base_url}/api/v1/billing/{path}", json=body,
                                 headers={"X-Billing-API-Key": key, **(headers or {})}, timeout=60)

    def worker_log_lines(self) -> list[dict]:
        """JSON log lines of the processes that run actors."""
        names = ["run"] if self.kind == "embedded" else [n for n in self.processes if n.startswith("worker")]
        return [line for name in names for line in self.log_lines(name)]

    def get(self, path: str, *, key: str) -> requests.Response:
        return self.session.get(f"{self.base_url}/api/v1/billing/{path}", headers={"X-Billing-API-Key": key}, timeout=30)

    def status(self, queue_id: str, *, key: str) -> dict:
        response = self.get(f"queue/{queue_id}/status", key=key)
        assert response.status_code == 200, response.text
        return response.json()

    def contacts(self, campaign_id: str, *, key: str) -> list[dict]:
        """Every contact of a campaign through the contacts API, in request order."""
        return all_contacts(self.get, campaign_id, key=key)

    def wait_for(self, queue_id: str, *, key: str, statuses=("completed",), timeout: float = 120) -> dict:
        """The queue's status once it is in one of ``statuses``."""
        last: dict = {}

        def reached() -> dict | None:
            last.update(self.status(queue_id, key=key))
            return dict(last) if last["status"] in statuses else None

        return wait_until(reached, timeout=timeout, interval=0.3,
                          message=lambda: f"queue still {last.get('status')}: {last}\n{self.logs()}")


def stop_group(process: subprocess.Popen, *, timeout: float = 20) -> None:
    """SIGTERM to the process group a test started (``start_new_session``),
    SIGKILL if it lingers past ``timeout`` seconds."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def running_stack(workdir: Path, rabbitmq_url: str, *, worker_processes: int = 2, worker_threads: int = 4, **env):
    """A started production stack on a fresh database; every process stopped
    and the database dropped at the end. Upper-case keywords are environment
    variables of every process."""
    with postgres_database() as database_url:
        wait_for_idle_broker(rabbitmq_url)  # our turn on the vhost: another run would take our messages
        purge_rabbitmq(rabbitmq_url)  # no message of an earlier run may reach this database
        stack = Stack(kind="production", env={"DATABASE_URL": database_url, "BROKER_URL": rabbitmq_url},
                      workdir=workdir, worker_processes=worker_processes, worker_threads=worker_threads, extra_env=env)
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()
