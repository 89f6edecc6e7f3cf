"""Wiring is explicit (issue 9, point 3): ``import tasks`` only declares the
actors, and ``tasks.setup()`` builds logging, the database and the broker
from one Settings. Each check runs in a fresh interpreter, since what is under
test is process-wide state (Dramatiq's global broker, logging, the database
binding) that this test process must not share."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from billing.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, *, env: dict[str, str]) -> dict:
    """Run ``code`` in a fresh interpreter with only ``env`` (plus PATH);
    returns the JSON object its last stdout line prints."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={"PATH": "/usr/bin:/bin", **env})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _settings_variables() -> set[str]:
    """The variable names Settings.from_env reads, found by letting it read a
    mapping that records them."""
    read: set[str] = set()

    class Recording(dict):
        def get(self, key, default=None):
            read.add(key)
            return super().get(key, default)

        def __getitem__(self, key):
            read.add(key)
            return super().__getitem__(key)

    Settings.from_env(Recording())
    return read


IMPORT_ONLY = """
import json, logging, os, socket

read, connected = set(), []


class Recording(type(os.environ)):
    # os.environ, recording the names read through it.
    def __getitem__(self, key):
        read.add(key)
        return super().__getitem__(key)


os.environ.__class__ = Recording
real_connect = socket.socket.connect
socket.socket.connect = lambda self, address: connected.append(str(address)) or real_connect(self, address)

# Dramatiq reads its own variables (dramatiq_worker_timeout...) when imported:
# only what importing tasks reads after that is of interest.
import dramatiq, dramatiq.broker, dramatiq.brokers.rabbitmq, peewee, pika, structlog
read.clear()
import tasks
from billing.adapters.db import database
from tasks.registry import REGISTRY

try:
    tasks.send_contact.send(1)
    refused = ""
except RuntimeError as exc:
    refused = str(exc)
module_actors = sorted(name for name, value in vars(tasks.actors).items() if isinstance(value, dramatiq.Actor))
print(json.dumps({
    "read": sorted(read), "connected": connected,
    "root_handlers": len(logging.getLogger().handlers), "structlog_configured": structlog.is_configured(),
    "global_broker": repr(dramatiq.broker.global_broker), "database": repr(database.obj),
    "refused": refused, "module_actors": module_actors,
    "on_registry": sorted(name for name in module_actors if getattr(tasks, name).broker is REGISTRY),
    "exported": sorted(tasks.__all__),
}))
"""


def test_importing_tasks_only_declares_the_actors():
    env = {"DATABASE_URL": "bogus://nowhere", "BROKER_URL": "amqp://nobody@203.0.113.1:1/", "LOG_LEVEL": "NOPE",
           "PORT": "not a number", "HOME": "/nonexistent"}
    found = _run(IMPORT_ONLY, env=env)
    assert not set(found["read"]) & _settings_variables(), found["read"]
    assert found["connected"] == []
    assert found["root_handlers"] == 0 and not found["structlog_configured"]
    assert found["global_broker"] == "None"
    assert found["database"] == "None"
    # An actor used before setup fails loudly instead of dropping the message.
    assert "tasks.setup()" in found["refused"]
    # Every actor is declared on the inert registry and exported by the package.
    assert found["module_actors"] and found["on_registry"] == found["module_actors"]
    assert set(found["module_actors"]) <= set(found["exported"]) and "setup" in found["exported"]


SETUP_TWICE = """
import dataclasses, json, logging
import dramatiq.broker, structlog
import tasks
from billing.adapters.db import database
from tasks.registry import declared_actors

first = tasks.setup()
again = tasks.setup()
bound = all(actor.broker is first.broker and first.broker.get_actor(actor.actor_name) is actor
            for actor in declared_actors())
state = {
    "same": again is first, "global": dramatiq.broker.global_broker is first.broker, "bound": bound,
    "database": database.obj is first.database, "database_path": first.database.database,
    "queues": sorted(first.broker.get_declared_queues()),
    "logging": structlog.is_configured() and bool(logging.getLogger().handlers),
}
other = tasks.setup(settings=dataclasses.replace(first.settings, send_retry_min_backoff_ms=1234))
tasks.send_contact.send(7)
state.update({
    "rewired": other is not first and dramatiq.broker.global_broker is other.broker,
    "moved": all(actor.broker is other.broker for actor in declared_actors()),
    "backoff": tasks.send_contact.options["min_backoff"],
    "sent": other.broker.queues["send"].qsize(),
})
print(json.dumps(state))
"""


def test_setup_wires_the_process_once_and_again_for_other_settings(tmp_path):
    path = tmp_path / "billing.sqlite3"
    found = _run(SETUP_TWICE, env={"DATABASE_URL": f"sqlite:///{path}", "BROKER_URL": "", "LOG_FORMAT": "json"})
    assert found["same"] and found["global"] and found["bound"] and found["logging"]
    assert found["database"] and found["database_path"] == str(path)
    assert {"dispatch", "send", "maintenance", "callbacks"} <= set(found["queues"])
    assert found["rewired"] and found["moved"]
    assert found["backoff"] == 1234 and found["sent"] == 1


def test_worker_settings_come_from_the_one_settings_object():
    unset = Settings.from_env({})
    assert unset.worker_threads is None  # each mode picks its own: 4 embedded, 8 per billing worker process
    assert (unset.worker_processes, unset.worker_timeout_ms) == (2, 100)
    given = Settings.from_env({"WORKER_THREADS": "16", "WORKER_PROCESSES": "3", "dramatiq_worker_timeout": "250"})
    assert (given.worker_threads, given.worker_processes, given.worker_timeout_ms) == (16, 3, 250)
    assert Settings.from_env({"DRAMATIQ_WORKER_TIMEOUT": "50", "dramatiq_worker_timeout": "250"}).worker_timeout_ms == 50


#: The product's packages, whose environment is read in billing/config.py only.
PACKAGES = ("billing", "billing_cli", "scheduler", "tasks", "web")

#: Ways of reading the environment other than through billing.config.
ENVIRONMENT_READ = re.compile(r"\bos\.environ\b|\bgetenv\(|\bfrom os import\b[^\n]*\benviron\b")


def test_only_the_settings_read_the_environment():
    offenders = [
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
        if path != ROOT / "billing" / "config.py" and ENVIRONMENT_READ.search(path.read_text())
    ]
    assert offenders == []
