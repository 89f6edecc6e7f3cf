"""The ``billing`` admin commands run inside the test process (click's
CliRunner) on real SQLite and PostgreSQL: what they print, what they write,
and the one readable error line (non-zero exit) for bad input and database
mistakes. tests/e2e/test_cli.py runs the same commands as subprocesses."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import dramatiq
import pytest
import requests
import yaml

import tasks
from billing import apikeys, callbacks, health
from billing.adapters import migrations, outbound
from billing.adapters.models import AdminToken, ApiKey, CallbackDelivery, Heartbeat, Instance, Queue, Template, Tenant
from billing.adapters.providers.sandbox import SandboxGateway
from billing.domain import signing
from billing_cli import worker as worker_cli
from tests.conftest import postgres_database
from tests.e2e.stack import free_port
from tests.factories import BAD_CLI_INPUT
from tests.inprocess_support import Cli, one_error_line, restore_signals  # noqa: F401  (a fixture)
from tests.waiting import wait_until

LATEST = migrations.MIGRATIONS[-1].version


@pytest.fixture
def cli(db, monkeypatch):
    """``billing`` on the migrated, empty database of each kind."""
    monkeypatch.delenv("BROKER_URL", raising=False)
    monkeypatch.delenv("PUBLIC_URL", raising=False)
    return Cli(database_url=db, monkeypatch=monkeypatch)


@pytest.fixture
def acme(cli):
    cli("tenant", "create", "acme")
    return cli


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(request, tmp_path):
    """A database with no schema at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/fresh/billing.sqlite3"
        return
    with postgres_database() as url:
        yield url


def test_db_upgrade_applies_every_migration_once(empty_database_url, monkeypatch):
    cli = Cli(database_url=empty_database_url, monkeypatch=monkeypatch)
    first = cli("db", "upgrade").stdout.splitlines()
    assert first == [f"applied {m.version:04d} {m.name}" for m in migrations.MIGRATIONS] + [
        f"schema at version {LATEST}"]
    assert cli("db", "upgrade").stdout.splitlines() == [f"schema at version {LATEST}"]
    assert migrations.current_version() == LATEST


def test_a_command_on_a_database_not_upgraded_says_so(empty_database_url, monkeypatch):
    cli = Cli(database_url=empty_database_url, monkeypatch=monkeypatch)
    line = one_error_line(cli("tenant", "show", "acme", ok=False))
    assert line.startswith("Error: ") and "run `billing db upgrade` first" in line


def test_tenant_create_show_update_and_rotate_secret(cli):
    created = cli("tenant", "create", "acme", "--timezone", "America/Manaus", "--business-hours", "mon-fri 09:00-17:00",
                  "--holidays", "BR-SP", "--holiday-dates", "2030-12-24,2030-12-31", "--daily-cap", "500",
                  "--max-attempts", "4", "--recipient-timezone").stdout
    assert created.startswith("tenant acme created (id ")
    assert "timezone America/Manaus; hours mon-fri 09:00-17:00; holidays BR-SP + 2030-12-24,2030-12-31" in created
    assert "daily cap 500; max attempts 4; hours in the recipient zone" in created
    row = Tenant.get(Tenant.name == "acme")
    assert (row.timezone, row.daily_cap, row.max_attempts, row.recipient_timezone) == ("America/Manaus", 500, 4, True)

    shown = cli("tenant", "show", "acme").stdout.splitlines()
    assert shown[0] == created.strip().replace("tenant acme created", "tenant acme", 1)
    secret = shown[-1].split()[-1]
    assert secret == row.callback_secret and secret.startswith(signing.SECRET_PREFIX)

    updated = cli("tenant", "update", "acme", "--daily-cap", "0", "--tenant-timezone", "--no-auto-reply").stdout
    assert "daily cap none" in updated and "recipient zone" not in updated
    row = Tenant.get_by_id(row.id)
    assert (row.daily_cap, row.recipient_timezone, row.auto_reply) == (0, False, False)
    assert row.timezone == "America/Manaus"  # an option not given is left as is

    rotated = cli("tenant", "rotate-secret", "acme").stdout.strip()
    assert rotated != secret and rotated == Tenant.get_by_id(row.id).callback_secret


def test_apikey_create_prints_a_working_key_last_and_revoke_stops_it(acme):
    out = acme("apikey", "create", "--tenant", "acme", "--name", "erp", "--types", "overdue,upcoming",
               "--allowed-ips", "10.0.0.0/8", "--expires-in-days", "30", "--hourly-limit", "100").stdout.splitlines()
    assert out[0].startswith("# API key for tenant acme (types: ")
    secret = out[-1]
    key = apikeys.authenticate(secret, client_ip="10.1.2.3")
    assert (key.name, key.hourly_limit, key.allowed_ips) == ("erp", 100, ["10.0.0.0/8"])
    assert "overdue" in out[0] and "upcoming" in out[0] and key.expires_at is not None
    apikeys.check_type_allowed(key, "upcoming")
    with pytest.raises(Exception, match="notification"):
        apikeys.check_type_allowed(key, "notification")

    prefix = f"bk_{key.prefix}"
    assert acme("apikey", "revoke", "--tenant", "acme", prefix).stdout.strip() == f"revoked {prefix}"
    assert ApiKey.get_by_id(key.id).revoked_at is not None
    with pytest.raises(Exception, match="revoked|invalid|unknown"):
        apikeys.authenticate(secret, client_ip="10.1.2.3")
    line = one_error_line(acme("apikey", "revoke", "--tenant", "acme", "bk_000000000000", ok=False))
    assert line == "Error: tenant 'acme' has no key with prefix 'bk_000000000000'"


def test_admin_token_create_prints_a_working_token_last(acme):
    out = acme("admin-token", "create", "--tenant", "acme", "--name", "ops").stdout.splitlines()
    assert out[0] == "# admin token for tenant acme (Authorization: Bearer ...); it is not shown again:"
    token = apikeys.authenticate_admin(out[-1])
    assert token.name == "ops" and token.tenant_id == Tenant.get(Tenant.name == "acme").id
    assert AdminToken.select().count() == 1


def test_template_create_from_options_and_from_a_file(acme, tmp_path):
    out = acme("template", "create", "--tenant", "acme", "--type", "overdue", "--name", "cobranca",
               "--variation", "Olá {{nome_cliente}}", "--variation", "Oi {{nome_cliente}}", "--strategy", "weighted").stdout
    assert out.startswith("template cobranca (overdue, 2 variations, weighted) created (id ")
    path = tmp_path / "lembrete.yaml"
    path.write_text(yaml.safe_dump({"type": "upcoming", "name": "lembrete", "strategy": "sequential",
                                    "variations": ["Vence {{data_vencimento}}"]}), encoding="utf-8")
    out = acme("template", "create", "--tenant", "acme", "--file", str(path), "--name", "renamed").stdout
    assert out.startswith("template renamed (upcoming, 1 variations, sequential) created")
    names = {(t.name, t.type, t.strategy) for t in Template.select()}
    assert {("cobranca", "overdue", "weighted"), ("renamed", "upcoming", "sequential")} <= names


def test_template_file_mistakes_are_one_line(acme, tmp_path):
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("- a\n- b\n", encoding="utf-8")
    assert one_error_line(acme("template", "create", "--tenant", "acme", "--file", str(not_a_mapping), ok=False)) == (
        f"Error: {not_a_mapping} must hold an object with type, name and variations")
    usage = acme("template", "create", "--tenant", "acme", "--name", "x", ok=False)
    assert usage.exit_code == 2 and "--type and --name are required" in usage.stderr


def test_a_yaml_syntax_error_is_one_line(acme, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("type: [unclosed\n", encoding="utf-8")
    line = one_error_line(acme("template", "create", "--tenant", "acme", "--file", str(broken), ok=False))
    assert line.startswith(f"Error: {broken} is not valid JSON/YAML: ")
    assert "(line 2, column 1)" in line


def test_instance_create_update_show_for_each_provider(acme, monkeypatch):
    # The outbound guard resolves gateway hosts: these names resolve as a deployment's would (a public
    # host; a private service inside the networks the test session allows), without DNS.
    addresses = {"gateway.example.com": ["93.184.216.34"], "waha": ["127.0.0.1"]}
    monkeypatch.setattr(outbound, "resolve", lambda host, port: addresses[host])
    out = acme("instance", "create", "--tenant", "acme", "--provider", "sandbox", "--name", "s1",
               "--messages-per-minute", "30", "--min-interval", "1.5", "--max-interval", "2.5",
               "--rest-every", "10", "--rest-seconds", "20", "--daily-cap", "300", "--warmup-days", "7").stdout
    assert out.startswith("instance s1 created (sandbox, 30/min, gaps 1.5-2.5s, rest after 10 (20s), daily cap 300, "
                          "warm-up 7) id ")
    updated = acme("instance", "update", "--tenant", "acme", "--name", "s1", "--inactive", "--messages-per-minute", "20").stdout
    assert "20/min" in updated and updated.rstrip().endswith(f", inactive) id {Instance.get(Instance.name == 's1').id}")
    assert Instance.get(Instance.name == "s1").is_active is False

    acme("instance", "create", "--tenant", "acme", "--provider", "evolution", "--name", "evo", "--url",
         "http://gateway.example.com/", "--token", "k", env={"PUBLIC_URL": "https://billing.example.com"})
    evo = Instance.get(Instance.name == "evo")
    shown = acme("instance", "show", "--tenant", "acme", "--name", "evo").stdout.splitlines()
    assert evo.url == "http://gateway.example.com" and shown[1].startswith("health: ")
    assert shown[-1] == ("webhook URL (Evolution instance webhook; 'Webhook by Events' on or off): "
                         f"https://billing.example.com/webhooks/evolution/{evo.id}/{evo.webhook_secret}")

    acme("instance", "create", "--tenant", "acme", "--provider", "waha", "--name", "default", "--url", "http://waha:3000")
    waha = Instance.get(Instance.name == "default")
    shown = acme("instance", "show", "--tenant", "acme", "--name", "default", env={"PUBLIC_URL": ""}).stdout.splitlines()
    assert shown[-2].startswith("webhook URL (WAHA session webhook): https://<PUBLIC_URL>/webhooks/waha/")
    assert shown[-1] == f"webhook HMAC key (sha512, optional: WAHA Plus signs, Core does not): {waha.webhook_secret}"


def test_instance_show_says_why_it_is_down(acme):

    acme("instance", "create", "--tenant", "acme", "--provider", "sandbox", "--name", "s1")
    health.record_state(Instance.get(Instance.name == "s1").id, health.DOWN, reason="gateway says close")
    shown = acme("instance", "show", "--tenant", "acme", "--name", "s1").stdout.splitlines()
    assert shown[1].startswith(f"health: {health.DOWN} (checked ")
    assert shown[2] == "down because: gateway says close"


def _emit(tenant_name: str = "acme", **data) -> str:
    tenant = Tenant.get(Tenant.name == tenant_name)
    return callbacks.emit(tenant_id=tenant.id, campaign_id=None, url="https://erp.example.com/hook",
                          event="contact.sent", data=data or {"contact_id": 7})


def test_callbacks_list_and_show(acme):
    acme("tenant", "create", "other")
    mine, theirs = _emit("acme"), _emit("other", contact_id=8)
    CallbackDelivery.update(status="failed", attempts=3, last_status_code=500).where(CallbackDelivery.id == theirs).execute()

    listed = [json.loads(line) for line in acme("callbacks", "list", "--json").stdout.splitlines()]
    assert {(d["id"], d["status"]) for d in listed} == {(mine, "pending"), (theirs, "failed")}
    only_acme = [json.loads(line) for line in acme("callbacks", "list", "--tenant", "acme", "--json").stdout.splitlines()]
    assert [d["id"] for d in only_acme] == [mine]
    text = acme("callbacks", "list", "--status", "failed").stdout.splitlines()
    assert len(text) == 1 and text[0].startswith(theirs) and "failed" in text[0] and "attempts 3  last 500" in text[0]
    assert acme("callbacks", "list", "--limit", "1").stdout.count("\n") == 1

    shown = acme("callbacks", "show", mine).stdout
    payload = json.loads(shown[: shown.rindex("}") + 1])
    assert payload["id"] == mine and payload["event"] == "contact.sent" and '"contact_id": 7' in shown
    assert one_error_line(acme("callbacks", "show", "msg_nope", ok=False)).startswith("Error: no callback delivery 'msg_nope'")


def test_outbox_lists_what_the_sandbox_recorded(acme):
    acme("tenant", "create", "other")
    for tenant_name, phone in (("acme", "+5511987654321"), ("other", "+5511911112222")):
        tenant = Tenant.get(Tenant.name == tenant_name)
        acme("instance", "create", "--tenant", tenant_name, "--provider", "sandbox", "--name", "s")
        instance = Instance.get((Instance.tenant == tenant.id) & (Instance.name == "s"))
        SandboxGateway(instance).send_text(phone=phone, chat_id=f"{phone[1:]}@s.whatsapp.net",
                                           text=f"Olá\n{tenant_name}", contact_id=tenant.id)

    lines = [json.loads(line) for line in acme("outbox", "--json", "--tenant", "acme").stdout.splitlines()]
    assert [(m["phone"], m["text"]) for m in lines] == [("+5511987654321", "Olá\nacme")]
    text = acme("outbox").stdout
    assert "+5511911112222  contact" in text and "    Olá\n    other" in text  # continuation lines indented
    assert len(acme("outbox", "--json", "--limit", "1").stdout.splitlines()) == 1


@pytest.mark.parametrize("args, message", BAD_CLI_INPUT)
def test_bad_input_is_one_readable_line(acme, args, message):
    result = acme(*args, ok=False)
    assert result.exit_code == 1
    assert one_error_line(result).startswith(message)


def test_a_usage_mistake_exits_2(acme):
    result = acme("instance", "create", "--tenant", "acme", "--provider", "telegram", "--name", "t", ok=False)
    assert result.exit_code == 2 and "'telegram' is not one of" in result.stderr


@pytest.mark.parametrize(
    "url, expected",
    [
        ("mysql://x", "Error: DATABASE_URL must start with sqlite:/// or postgresql://"),
        ("postgresql://billing:s3cret@127.0.0.1:1/billing", "Error: cannot reach the database (postgresql://billing:***@127.0.0.1:1"),
    ],
)
def test_database_mistakes_are_one_line_without_the_password(url, expected, monkeypatch):
    result = Cli(database_url=url, monkeypatch=monkeypatch)("tenant", "show", "acme", ok=False)
    line = one_error_line(result)
    assert result.exit_code == 1 and line.startswith(expected) and "s3cret" not in line


@pytest.mark.postgres
def test_a_missing_postgres_database_is_one_line(postgres_database_url, monkeypatch):
    base, _, _ = postgres_database_url.rpartition("/")
    line = one_error_line(Cli(database_url=f"{base}/billing_nope_db", monkeypatch=monkeypatch)("db", "upgrade", ok=False))
    assert "billing_nope_db" in line and "does not exist" in line


# --- callbacks retry: through the broker, or left to the scheduler ---------------------------------


def test_callbacks_retry_queues_the_delivery_on_the_broker(acme):

    delivery_id = _emit()
    assert acme("callbacks", "retry", delivery_id).stdout.strip() == f"{delivery_id} queued"
    broker = tasks.setup(configure_logging=False).broker  # the command's wiring (same environment)
    queued = [dramatiq.Message.decode(raw) for raw in list(broker.queues["callbacks"].queue)]
    assert [(m.actor_name, list(m.args)) for m in queued] == [("deliver_callback", [delivery_id])]
    broker.flush_all()


def test_callbacks_retry_with_the_broker_down_leaves_it_to_the_scheduler(acme):


    delivery_id = _emit()
    CallbackDelivery.update(next_attempt_at=datetime(2099, 1, 1)).execute()  # not due: only the retry makes it so
    out = acme("callbacks", "retry", delivery_id, env={"BROKER_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"})
    assert out.stdout.strip().endswith("the scheduler will deliver it") and "Traceback" not in out.stderr
    assert callbacks.due() == [delivery_id]
    assert one_error_line(acme("callbacks", "retry", "msg_nope", ok=False)).startswith("Error: no callback delivery")


# --- billing worker: the supervisor and its child, in this process --------------------------------

#: A child that exits at once with the status given as its argument.
EXITING_CHILD = [sys.executable, "-c", "import sys; sys.exit(int(sys.argv[1]))"]


def _ignoring_sigterm(marker: Path) -> list[str]:
    """A child that ignores SIGTERM, says so by creating ``marker``, and hangs."""
    code = ("import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "pathlib.Path(sys.argv[1]).touch(); time.sleep(120)")
    return [sys.executable, "-c", code, str(marker)]


def test_the_child_command_carries_the_options():
    command = worker_cli.child_command(threads=3, queues=("send", "dispatch"), worker_timeout_ms=50, stop_timeout=9.0)
    assert command[:3] == [sys.executable, "-m", "billing_cli.worker"]
    assert command[3:] == ["--threads", "3", "--worker-timeout", "50", "--stop-timeout", "9.0",
                           "--parent", str(os.getpid()), "--queues", "send", "dispatch"]
    assert "--queues" not in worker_cli.child_command(threads=1, queues=(), worker_timeout_ms=100, stop_timeout=1.0)


def test_exits_are_described_by_signal_name_or_status():
    assert worker_cli._describe_exit(-signal.SIGKILL) == "SIGKILL"
    assert worker_cli._describe_exit(3) == "exit 3"
    assert worker_cli._describe_exit(-200) == "signal 200"


def test_the_restart_backoff_grows_while_children_die_young_and_resets_after_a_long_life():
    supervisor = worker_cli.Supervisor(processes=1, command=[*EXITING_CHILD, "1"])
    slot = supervisor.slots[0]
    delays = []
    for _ in range(4):
        supervisor._start(slot)
        slot.process.wait(timeout=30)
        now = slot.started_at + 1.0  # it died a second after its start
        supervisor._schedule_restart(slot, now)
        delays.append(slot.restart_at - now)
    assert delays == [1.0, 2.0, 4.0, 8.0] and slot.process is None and slot.young_deaths == 4
    supervisor._start(slot)
    slot.process.wait(timeout=30)
    now = slot.started_at + worker_cli.STABLE_AFTER_SECONDS
    supervisor._schedule_restart(slot, now)
    assert slot.young_deaths == 0 and slot.restart_at - now == worker_cli.RESTART_BACKOFF_MIN_SECONDS


def test_a_child_that_refuses_its_options_stops_the_supervisor():
    supervisor = worker_cli.Supervisor(processes=2, command=[*EXITING_CHILD, str(worker_cli.EXIT_USAGE)])
    assert supervisor.run() == worker_cli.EXIT_USAGE
    assert supervisor.children() == []


def test_a_dead_child_is_replaced_and_a_stop_kills_one_that_ignores_sigterm(tmp_path, monkeypatch):
    monkeypatch.setattr(worker_cli, "RESTART_BACKOFF_MIN_SECONDS", 0.1)
    marker = tmp_path / "ready"
    supervisor = worker_cli.Supervisor(processes=1, command=_ignoring_sigterm(marker), stop_timeout=0.5)
    runner = threading.Thread(target=lambda: setattr(supervisor, "status", supervisor.run()), daemon=True)
    runner.start()
    wait_until(marker.exists, timeout=30, interval=0.05, message="the first child did not start")
    (first,) = wait_until(supervisor.children, timeout=5, interval=0.05, message="no child")
    marker.unlink()
    os.kill(first, signal.SIGKILL)  # kill -9, out of memory...
    wait_until(marker.exists, timeout=30, interval=0.05, message="the child was not replaced")
    (second,) = supervisor.children()
    assert second != first
    started = time.monotonic()
    supervisor.request_stop()
    runner.join(30)
    assert not runner.is_alive() and supervisor.status == 0 and supervisor.children() == []
    assert time.monotonic() - started >= 0.5  # it was given its stop timeout, then killed


def test_billing_worker_refuses_unknown_queues(acme):
    result = acme("worker", "-Q", "send,bogus", ok=False)
    assert result.exit_code == 2 and "unknown queue(s) bogus; the queues are " in result.stderr


@pytest.mark.usefixtures("restore_signals")
def test_billing_worker_runs_its_children_until_sigterm(acme):

    def children_registered() -> bool:
        return Heartbeat.select().where((Heartbeat.kind == "worker") & (Heartbeat.pid != os.getpid())).count() == 2

    def stop_when_ready() -> None:
        wait_until(children_registered, timeout=60, interval=0.1, message="the worker children did not register")
        os.kill(os.getpid(), signal.SIGTERM)  # what a process manager sends

    stopper = threading.Thread(target=stop_when_ready, daemon=True)
    stopper.start()
    acme("worker", "--processes", "2", "--threads", "1", "--stop-timeout", "20")  # returns after the SIGTERM
    stopper.join(5)
    stopped = Heartbeat.select().where((Heartbeat.kind == "worker") & Heartbeat.stopped_at.is_null(False))
    assert stopped.count() == 2  # each child finished and unregistered


@pytest.mark.usefixtures("restore_signals")
def test_a_worker_child_runs_in_this_process_until_sigterm(acme, monkeypatch):

    parents = []
    monkeypatch.setattr(worker_cli, "_die_with_parent", parents.append)  # not for the test process itself
    acme.monkeypatch.setenv("DATABASE_URL", acme.database_url)
    assert worker_cli.run_child(threads=1, queues=["bogus"], worker_timeout_ms=100, stop_timeout=5, parent=0) == (
        worker_cli.EXIT_USAGE)

    def stop_when_registered() -> None:
        wait_until(lambda: Heartbeat.select().where(Heartbeat.stopped_at.is_null()).count(), timeout=30,
                   interval=0.05, message="the worker did not register")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_registered, daemon=True).start()
    assert worker_cli.run_child(threads=1, queues=["send"], worker_timeout_ms=100, stop_timeout=3, parent=123) == 0
    (row,) = Heartbeat.select()
    assert row.info["queues"] == ["send"] and row.stopped_at is not None and parents == [0, 123]


def test_a_worker_child_whose_supervisor_is_gone_stops_itself():
    code = "from billing_cli.worker import _die_with_parent; import time; _die_with_parent(1); time.sleep(30)"
    child = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert child.returncode == -signal.SIGTERM  # its parent is not pid 1: the supervisor it names is gone


# --- billing run: the embedded mode, in this process until SIGTERM -----------------------------------


@pytest.mark.usefixtures("restore_signals")
def test_billing_run_serves_sends_the_demo_and_stops_on_sigterm(sqlite_db, monkeypatch):
    monkeypatch.delenv("BROKER_URL", raising=False)
    port = free_port()
    answers = {}

    def use_then_stop() -> None:
        base = f"http://127.0.0.1:{port}"
        try:
            answers["healthz"] = wait_until(lambda: _get(f"{base}/healthz"), timeout=60, interval=0.1,
                                            message="billing run did not serve")
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # Ctrl-C / a process manager's stop

    threading.Thread(target=use_then_stop, daemon=True).start()
    result = Cli(database_url=sqlite_db, monkeypatch=monkeypatch)("run", "--port", str(port))
    assert answers["healthz"].status_code == 200
    banner = result.stdout
    assert f"Billing is running at http://127.0.0.1:{port}" in banner and "broker: embedded" in banner
    # Not a terminal (CliRunner's buffer, like a file or a process manager's log): the key is not written.
    assert "Demo API key: not shown, the output is not a terminal" in banner and "curl" in banner
    demo_key = ApiKey.get(ApiKey.revoked_at.is_null())
    assert f"bk_{demo_key.prefix}" not in banner and "X-Billing-API-Key: bk_...'" in banner
    assert Tenant.select().count() == 1 and Queue.select().count() == 0  # the demo tenant, nothing sent yet
    assert Heartbeat.get(Heartbeat.kind == "worker").stopped_at is not None  # the in-process worker stopped cleanly


def _get(url: str) -> requests.Response | None:
    """The answer, or None while nothing listens yet."""
    try:
        return requests.get(url, timeout=2)
    except requests.ConnectionError:
        return None
