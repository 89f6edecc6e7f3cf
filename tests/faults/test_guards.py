"""The private servers refuse to touch anything but their own: the machine's
ports, a directory that is not the suite's, a node that is not the suite's,
and a pid (read from a pid file) that belongs to another process."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.faults.services import (
    MACHINE_POSTGRES_PORT,
    MACHINE_RABBITMQ_PORT,
    PrivatePostgres,
    PrivateRabbitMQ,
    ServiceUnavailable,
    alive,
    make_base_dir,
)


@pytest.fixture
def base():
    path = make_base_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def postgres(base):
    try:
        return PrivatePostgres(base)
    except ServiceUnavailable as exc:
        pytest.fail(f"the fault suite needs the PostgreSQL server binaries: {exc}")


@pytest.fixture
def stranger():
    """A process that is none of the servers' (it stands for the machine's)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


@pytest.mark.parametrize("port", [MACHINE_POSTGRES_PORT, MACHINE_RABBITMQ_PORT])
def test_a_server_on_a_machine_port_is_never_stopped_or_killed(postgres, port):
    postgres.port = port
    for action in (postgres.stop, postgres.kill, postgres.destroy):
        with pytest.raises(RuntimeError, match="refusing to stop a server that is not the suite's own"):
            action()


def test_a_server_outside_the_suites_directory_is_never_stopped(postgres, tmp_path):
    postgres.root = tmp_path / "pg"
    with pytest.raises(RuntimeError, match="refusing to stop"):
        postgres.stop()


def test_a_pid_file_naming_another_process_gets_no_signal(postgres, stranger):
    postgres.data.mkdir(parents=True)
    (postgres.data / "postmaster.pid").write_text(f"{stranger.pid}\n{postgres.data}\n")
    assert not postgres.running()
    postgres.kill()
    assert alive(stranger.pid) and stranger.poll() is None


def test_a_rabbitmq_node_that_is_not_the_suites_is_never_controlled(base):
    try:
        node = PrivateRabbitMQ(base)
    except ServiceUnavailable as exc:
        pytest.fail(f"the fault suite needs the RabbitMQ server: {exc}")
    node.node = "rabbit@localhost"  # the machine's node
    with pytest.raises(RuntimeError, match="refusing to control RabbitMQ node rabbit@localhost"):
        node.ctl_run("stop")
