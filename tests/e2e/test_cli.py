"""The `billing` command as scripts use it: stable flags, readable errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BILLING = str(Path(sys.executable).parent / "billing")


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
    assert again.stdout.strip() == "schema at version 1"


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


@pytest.mark.parametrize(
    "args, message",
    [
        (["tenant", "create", "acme"], "Error: tenant 'acme' already exists"),
        (["tenant", "create", "x", "--timezone", "Mars/Olympus"], "Error: unknown time zone 'Mars/Olympus'"),
        (["apikey", "create", "--tenant", "ghost"], "Error: no tenant named 'ghost'"),
        (["apikey", "create", "--tenant", "acme", "--types", "overdue,spam"], "Error: unknown template type(s) spam"),
        (["template", "create", "--tenant", "acme", "--type", "overdue", "--name", "b", "--variation", "{{#if x}}open"],
         "Error: variation 1: unclosed"),
        (["template", "create", "--tenant", "acme", "--file", "/nonexistent.yaml"], "Error: cannot read /nonexistent.yaml"),
        (["instance", "create", "--tenant", "acme", "--provider", "waha", "--name", "w"], "Error: a waha instance needs --url"),
        (["instance", "create", "--tenant", "acme", "--provider", "sandbox", "--name", "s", "--messages-per-minute", "-1"],
         "Error: messages per minute must be between"),
    ],
)
def test_errors_are_one_readable_line(cli, args, message):
    cli("tenant", "create", "acme")
    result = cli(*args, ok=False)
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_database_url_is_one_line(tmp_path):
    result = subprocess.run([BILLING, "db", "upgrade"], env={"DATABASE_URL": "mysql://x", "PATH": "/usr/bin"},
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.startswith("Error: DATABASE_URL must start with")


def test_outbox_json_lines(cli, tmp_path):
    # An empty outbox prints nothing and succeeds.
    assert cli("outbox", "--json").stdout == ""


def test_tenant_secret_and_callbacks_listing(cli):
    from billing import callbacks, db, signing

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
