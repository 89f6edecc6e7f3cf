"""The `billing` command as scripts use it: stable flags, readable errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from billing.adapters import encryption, migrations
from tests.factories import BAD_CLI_INPUT

BILLING = str(Path(sys.executable).parent / "billing")
#: The suite's encryption key, for commands run with an environment of their
#: own: without it a PostgreSQL URL is refused before the database is tried.
KEYS = {encryption.KEYS_SETTING: os.environ[encryption.KEYS_SETTING]}


@pytest.fixture
def cli(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/cli.sqlite3", "PATH": "/usr/bin:/bin", "LOG_FORMAT": "json"}

    def run(*args, ok=True):
        result = subprocess.run([BILLING, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    run.tmp_path = tmp_path
    run("db", "upgrade")
    return run


def test_upgrade_is_idempotent(cli):
    again = cli("db", "upgrade")
    assert again.stdout.strip() == f"schema at version {migrations.MIGRATIONS[-1].version}"


def test_setup_commands_and_the_key_on_the_last_line(cli):
    assert "created" in cli("tenant", "create", "acme", "--timezone", "America/Manaus").stdout
    key = cli("apikey", "create", "--tenant", "acme", "--name", "ERP", "--types", "overdue,notification").stdout.splitlines()[-1]
    assert key.startswith("bk_") and len(key) > 40 and " " not in key
    out = cli("template", "create", "--tenant", "acme", "--type", "overdue", "--name", "t1",
              "--variation", "Olá {{nome_cliente}}", "--variation", "Oi {{nome_cliente}}", "--strategy", "weighted").stdout
    assert "2 variations" in out and "weighted" in out
    out = cli("instance", "create", "--tenant", "acme", "--provider", "sandbox", "--name", "s1", "--messages-per-minute", "30").stdout
    assert "30/min" in out


def test_template_from_a_yaml_file(cli):
    cli("tenant", "create", "acme")
    path = cli.tmp_path / "t.yaml"
    path.write_text("type: upcoming\nname: lembrete\nstrategy: sequential\nvariations:\n  - 'Olá {{nome_cliente}}, vence {{data_vencimento}}'\n  - text: 'Oi {{nome_cliente}}'\n    weight: 3\n")
    out = cli("template", "create", "--tenant", "acme", "--file", str(path)).stdout
    assert "lembrete (upcoming, 2 variations, sequential)" in out
    json_path = cli.tmp_path / "t.json"
    json_path.write_text(json.dumps({"type": "notification", "name": "aviso", "variations": ["{{mensagem}}"]}))
    assert "aviso (notification" in cli("template", "create", "--tenant", "acme", "--file", str(json_path)).stdout


@pytest.mark.parametrize("args, message", BAD_CLI_INPUT)
def test_errors_are_one_readable_line(cli, args, message):
    cli("tenant", "create", "acme")
    result = cli(*args, ok=False)
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_database_url_is_one_line(tmp_path):
    result = subprocess.run([BILLING, "db", "upgrade"], env={"DATABASE_URL": "mysql://x", "PATH": "/usr/bin", **KEYS},
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.startswith("Error: DATABASE_URL must start with")


def test_outbox_json_lines(cli, tmp_path):
    # An empty outbox prints nothing and succeeds.
    assert cli("outbox", "--json").stdout == ""


def test_tenant_secret_and_callbacks_listing(cli):
    from billing import callbacks
    from billing.adapters import db
    from billing.domain import signing

    cli("tenant", "create", "acme")
    shown = cli("tenant", "show", "acme").stdout
    secret = shown.strip().splitlines()[-1].split()[-1]
    assert secret.startswith(signing.SECRET_PREFIX) and "hours mon-fri 08:00-18:00, sat 08:00-12:00" in shown
    rotated = cli("tenant", "rotate-secret", "acme").stdout.strip().splitlines()[-1]
    assert rotated.startswith(signing.SECRET_PREFIX) and rotated != secret

    db.connect(f"sqlite:///{cli.tmp_path}/cli.sqlite3")
    delivery_id = callbacks.emit(tenant_id=1, campaign_id=None, url="https://erp.example.com/hook", event="contact.sent",
                                 data={"contact_id": 7})
    db.database.close()
    listed = [json.loads(line) for line in cli("callbacks", "list", "--json").stdout.splitlines()]
    assert [(d["id"], d["event"], d["status"], d["attempts"]) for d in listed] == [(delivery_id, "contact.sent", "pending", 0)]
    shown = cli("callbacks", "show", delivery_id).stdout
    assert '"contact_id": 7' in shown
    missing = cli("callbacks", "show", "msg_nope", ok=False)
    assert missing.returncode == 1 and missing.stderr.startswith("Error: no callback delivery 'msg_nope'")


# --- database mistakes: one line for every command ----------------------------------

#: Commands that do not run through billing_cli.main.command and check their
#: database in their own start-up: ``billing worker`` (billing_cli/worker.py)
#: supervises worker processes that wait for the database.
CHECKED_ELSEWHERE = {("worker",)}

#: Commands that bring the schema up to date themselves: a schema not yet
#: upgraded is no mistake for them.
UPGRADING = {("db", "upgrade"), ("run",)}

#: Commands that use no database at all (tests/integration/test_encryption.py).
NO_DATABASE = {("secrets", "generate-key")}


def _every_command() -> list[tuple[tuple[str, ...], list[str]]]:
    """Each leaf command of ``billing`` with arguments that pass click's
    parsing (a value for every argument and required option), so that what
    fails is the database."""
    import click

    from billing_cli.main import main

    found = []

    def walk(group: click.Group, path: tuple[str, ...]) -> None:
        for name, sub in sorted(group.commands.items()):
            if isinstance(sub, click.Group):
                walk(sub, (*path, name))
                continue
            args: list[str] = []
            for param in sub.params:
                if isinstance(param, click.Argument):
                    args.append("x")
                elif param.required:
                    value = param.type.choices[0] if isinstance(param.type, click.Choice) else (
                        "1" if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)) else "x")
                    args += [param.opts[0], str(value)]
            found.append(((*path, name), args))

    walk(main, ())
    return found


def _run_all(commands, env: dict, cwd: Path) -> dict:
    """Run the commands concurrently (each is a process start and one
    failing connection); returns {command path: CompletedProcess}."""
    from concurrent.futures import ThreadPoolExecutor

    def one(item):
        path, args = item
        return path, subprocess.run([BILLING, *path, *args], env=env, cwd=cwd, capture_output=True, text=True,
                                    timeout=60)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(one, commands))


def _assert_one_line(results: dict, expected: str) -> None:
    problems = []
    for path, result in results.items():
        lines = result.stderr.strip().splitlines()
        if result.returncode != 1 or len(lines) != 1 or not lines[0].startswith("Error: ") or expected not in lines[0]:
            problems.append(f"billing {' '.join(path)} -> {result.returncode}: {result.stderr[-600:]!r}")
    assert not problems, "\n".join(problems)


def test_the_commands_are_all_covered():
    paths = {path for path, _ in _every_command()}
    assert {("db", "upgrade"), ("tenant", "create"), ("outbox",), ("run",), ("scheduler",)} <= paths
    assert CHECKED_ELSEWHERE <= paths  # a command renamed or gone: update CHECKED_ELSEWHERE


def test_an_unreachable_server_is_one_line_for_every_command(tmp_path):
    from tests.e2e.stack import free_port

    url = f"postgresql://billing:s3cret@127.0.0.1:{free_port()}/billing"  # nothing listens there
    env = {"DATABASE_URL": url, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LOG_FORMAT": "json", **KEYS}
    commands = [c for c in _every_command() if c[0] not in CHECKED_ELSEWHERE | NO_DATABASE]
    results = _run_all(commands, env, tmp_path)
    _assert_one_line(results, "cannot reach the database (postgresql://billing:***@127.0.0.1:")
    assert not any("s3cret" in r.stderr for r in results.values())  # the password is never printed


def test_a_schema_not_upgraded_is_one_line_for_every_command(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/fresh.sqlite3", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    commands = [c for c in _every_command() if c[0] not in CHECKED_ELSEWHERE | UPGRADING | NO_DATABASE]
    _assert_one_line(_run_all(commands, env, tmp_path), "run `billing db upgrade` first")


def test_a_half_upgraded_schema_is_one_line(cli):
    from billing.adapters import db

    db.connect(f"sqlite:///{cli.tmp_path}/cli.sqlite3")
    migrations.SchemaMigration.delete().where(migrations.SchemaMigration.version == migrations.MIGRATIONS[-1].version).execute()
    db.database.close()
    result = cli("tenant", "create", "acme", ok=False)
    assert result.returncode == 1 and result.stderr == (
        f"Error: the database schema is not upgraded (at version {migrations.MIGRATIONS[-2].version}, the code needs "
        f"{migrations.MIGRATIONS[-1].version}); run `billing db upgrade` first\n")
    assert "applied" in cli("db", "upgrade").stdout
    assert "created" in cli("tenant", "create", "acme").stdout


@pytest.mark.parametrize("url, expected", [
    pytest.param("postgresql://postgres@127.0.0.1:5432/billing_does_not_exist_x",
                 "Error: database 'billing_does_not_exist_x' does not exist (postgresql://postgres@127.0.0.1:5432/",
                 marks=pytest.mark.postgres),
    ("postgresql://postgres@127.0.0.1:notaport/billing", "Error: DATABASE_URL is not valid: Port could not be cast"),
    ("postgresql://postgres@db.invalid/billing", "Error: unknown database host 'db.invalid'"),
    ("mysql://x", "Error: DATABASE_URL must start with sqlite:/// or postgresql://"),
    ("sqlite:////proc/billing/x.sqlite3", "Error: cannot create the database directory for sqlite:////proc/billing/"),
])
def test_database_mistakes_are_one_line(url, expected, tmp_path, request):
    if "5432" in url:
        request.getfixturevalue("postgres_database_url")  # the server must answer for "does not exist" to be true
    for args in (["db", "upgrade"], ["tenant", "show", "acme"], ["outbox"]):
        result = subprocess.run([BILLING, *args], env={"DATABASE_URL": url, "PATH": "/usr/bin:/bin", **KEYS},
                                capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(expected) and len(result.stderr.strip().splitlines()) == 1, result.stderr


# --- the default database ------------------------------------------------------

def test_the_default_database_does_not_depend_on_the_directory(tmp_path):
    """Without DATABASE_URL every command uses one file per user, wherever it
    is run from: ~/.local/share/whatsapp-billing/billing.sqlite3, or
    $BILLING_HOME/billing.sqlite3."""
    home = tmp_path / "home"
    first, second = tmp_path / "project", tmp_path / "elsewhere" / "deeper"
    for directory in (home, first, second):
        directory.mkdir(parents=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}

    def run(*args, cwd):
        result = subprocess.run([BILLING, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    run("db", "upgrade", cwd=first)
    run("tenant", "create", "acme", cwd=first)
    assert "tenant acme" in run("tenant", "show", "acme", cwd=second)
    assert (home / ".local/share/whatsapp-billing/billing.sqlite3").is_file()
    assert not list(first.iterdir()) and not list(second.iterdir())  # no var/ left in either

    env["BILLING_HOME"] = str(tmp_path / "billing-home")
    run("db", "upgrade", cwd=second)
    assert (tmp_path / "billing-home" / "billing.sqlite3").is_file()
    missing = subprocess.run([BILLING, "tenant", "show", "acme"], env=env, cwd=first, capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 1 and missing.stderr == "Error: no tenant named 'acme'\n"


def test_callbacks_retry_with_the_broker_down_leaves_it_to_the_scheduler(cli, tmp_path):
    from datetime import datetime

    from billing import callbacks
    from billing.adapters import db
    from billing.adapters.models import CallbackDelivery
    from tests.e2e.stack import free_port

    cli("tenant", "create", "acme")
    db.connect(f"sqlite:///{cli.tmp_path}/cli.sqlite3")
    delivery_id = callbacks.emit(tenant_id=1, campaign_id=None, url="https://erp.example.com/hook",
                                 event="contact.sent", data={"contact_id": 7})
    CallbackDelivery.update(next_attempt_at=datetime(2099, 1, 1)).execute()  # not due: only the retry makes it so
    db.database.close()
    env = {"DATABASE_URL": f"sqlite:///{cli.tmp_path}/cli.sqlite3", "PATH": "/usr/bin:/bin",
           "BROKER_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"}
    result = subprocess.run([BILLING, "callbacks", "retry", delivery_id], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("the scheduler will deliver it") and "Traceback" not in result.stderr
    db.connect(f"sqlite:///{cli.tmp_path}/cli.sqlite3")
    assert callbacks.due() == [delivery_id]
    db.database.close()
