"""What the running processes show of themselves (issue 10, points 8 and 12),
over real HTTP and real terminals: ``make run``'s two commands keep a local
encryption key and a database only their owner can read, print the demo key on
the terminal and never in the JSON log, and neither server (``billing run``'s
werkzeug, the Procfile's gunicorn) names a version in its Server header."""
from __future__ import annotations

import json
import os
import re
import select
import sqlite3
import stat
import subprocess
from pathlib import Path

import requests
from cryptography.fernet import Fernet

from billing.adapters import encryption
from tests.e2e.stack import free_port, stop_group
from tests.factories import contact
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
#: How long a process may take to start (a failure bound, never a measurement).
START_TIMEOUT = 60
DEMO_KEY = re.compile(r"Demo API key \(new at every start\): (bk_[A-Za-z0-9_-]+)")


def _environment(**extra: str) -> dict:
    """The suite's environment without the settings these tests choose themselves."""
    unset = {"DATABASE_URL", "BROKER_URL", "BILLING_HOME", encryption.KEYS_SETTING, "PORT", "LOG_FORMAT"}
    return {**{k: v for k, v in os.environ.items() if k not in unset}, **extra}


class Terminal:
    """A pseudo-terminal a process writes its stdout to, read as it arrives."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.text = ""

    def read_available(self) -> str:
        while select.select([self.master], [], [], 0)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the process closed it (EIO)
                break
            if not chunk:
                break
            self.text += chunk.decode(errors="replace")
        return self.text

    def close(self) -> None:
        os.close(self.master)


def test_make_run_keeps_a_private_key_and_database_and_the_demo_key_stays_on_the_terminal(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    env = _environment(BILLING_HOME=str(home), BROKER_URL="", LOG_FORMAT="json")
    # What `make run` runs: the upgrade, then the embedded mode.
    subprocess.run([str(BIN / "billing"), "db", "upgrade"], env=env, cwd=tmp_path, check=True, capture_output=True,
                   timeout=120)
    terminal = Terminal()
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(BIN / "billing"), "run", "--port", str(port)], env=env, cwd=tmp_path,
                                   stdin=subprocess.DEVNULL, stdout=terminal.slave, stderr=log, start_new_session=True)
    os.close(terminal.slave)
    try:
        found = wait_until(lambda: DEMO_KEY.search(terminal.read_available()), timeout=START_TIMEOUT, interval=0.1,
                           message="billing run printed no demo key on its terminal")
        key = found.group(1)
        base = f"http://127.0.0.1:{port}"
        health = wait_until(lambda: _answer(f"{base}/healthz"), timeout=START_TIMEOUT, interval=0.1,
                            message="billing run did not serve")
        assert health.headers["Server"] == "billing", health.headers
        sent = requests.post(f"{base}/api/v1/billing/send/overdue", headers={"X-Billing-API-Key": key}, timeout=10,
                             json={"external_id": "demo-1", "contacts": [contact("+5511987654321")]})
        assert sent.status_code not in (401, 403), sent.text  # the printed key is the demo tenant's
        assert sent.headers["Server"] == "billing"
        wait_until(lambda: "/api/v1/billing/send/overdue" in log_path.read_text(), timeout=START_TIMEOUT,
                   message="the request was not logged")
    finally:
        stop_group(process)
        terminal.close()

    log = log_path.read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(line.get("path") == "/api/v1/billing/send/overdue" for line in lines), log[-2000:]
    assert key not in log and key.split("_", 2)[2] not in log
    assert "987654321" not in log

    # The key `make run` made, and the database, are the owner's only.
    database, key_file = home / "billing.sqlite3", home / f"billing.sqlite3{encryption.LOCAL_KEY_SUFFIX}"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    local_key = key_file.read_text().strip()
    with sqlite3.connect(database) as conn:
        (webhook_secret, token), = conn.execute("SELECT webhook_secret, token FROM instance").fetchall()
        (callback_secret,) = conn.execute("SELECT callback_secret FROM tenant").fetchone()
    for stored in (webhook_secret, callback_secret):
        assert stored.startswith(encryption.ENCRYPTED_PREFIX)
        assert Fernet(local_key.encode()).decrypt(stored.removeprefix(encryption.ENCRYPTED_PREFIX).encode())
    assert token == ""  # the sandbox gateway has none; nothing to hide


def test_the_procfiles_gunicorn_names_no_version(tmp_path):
    procfile = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if ": " in line)
    port = free_port()
    env = _environment(DATABASE_URL=f"sqlite:///{tmp_path}/billing.sqlite3", BROKER_URL="", PORT=str(port),
                       WEB_CONCURRENCY="1", LOG_FORMAT="json")
    subprocess.run([str(BIN / "billing"), "db", "upgrade"], env=env, cwd=tmp_path, check=True, capture_output=True,
                   timeout=120)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    with open(tmp_path / "web.log", "w") as log:
        process = subprocess.Popen(["sh", "-c", f"exec {procfile['web']}"], env=env, cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        answer = wait_until(lambda: _answer(f"http://127.0.0.1:{port}/healthz"), timeout=START_TIMEOUT, interval=0.1,
                            message="gunicorn did not serve")
        missing = requests.get(f"http://127.0.0.1:{port}/nope", timeout=10)
    finally:
        stop_group(process)
    for response in (answer, missing):
        server = response.headers["Server"]
        assert not re.search(r"\d|/", server), server  # "gunicorn", never "gunicorn/23.0.0"
        assert "python" not in server.lower() and "werkzeug" not in server.lower()


def _answer(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=2)
    except requests.ConnectionError:
        return None
