"""Private PostgreSQL and RabbitMQ servers that the fault suite may stop,
restart and kill.

The machine's own services (PostgreSQL on 5432, RabbitMQ on 5672) are never
touched: each private server has its own data directory under a temporary
directory, its own free ports, and (RabbitMQ) its own node name, and only
the processes this module started are ever signalled, by their pids.

* :class:`PrivatePostgres`: ``initdb`` + ``pg_ctl``, run as the ``postgres``
  user when the suite runs as root (initdb refuses root).
* :class:`PrivateRabbitMQ`: a second node (``rabbit_fault_<random>@localhost``)
  of the installed RabbitMQ, with no plugins and a config file of its own (the
  machine's ``/etc/rabbitmq/rabbitmq.conf`` names port 5672), run as the
  ``rabbitmq`` user when root, so the server and ``rabbitmqctl`` share that
  user's Erlang cookie.
"""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.e2e.stack import free_port

#: How long a server gets to start or stop.
START_TIMEOUT = 90
STOP_TIMEOUT = 60
#: Poll period while waiting for a server.
POLL_SECONDS = 0.1


# --- processes ------------------------------------------------------------------

def free_port_below(limit: int) -> int:
    """A free port below ``limit`` (RabbitMQ's CLI tools use the distribution
    port + 10000, which must stay a valid port)."""
    for _ in range(200):
        port = free_port()
        if port < limit:
            return port
    raise RuntimeError(f"no free port below {limit}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def descendants_of(pid: int) -> list[int]:
    """Every live descendant of ``pid``, parents before their children."""
    result, frontier = [], [pid]
    while frontier:
        nxt = []
        for parent in frontier:
            kids = children_of(parent)
            result += kids
            nxt += kids
        frontier = nxt
    return result


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Signal ``pid`` and all its descendants (collected first, so children
    reparented by the signal are not missed). Returns the pids signalled."""
    pids = [pid, *descendants_of(pid)]
    for target in pids:
        try:
            os.kill(target, sig)
        except ProcessLookupError:
            pass
    return pids


def _as_user(user: str) -> list[str]:
    """Command prefix running a program as ``user`` (nothing unless we are root).
    ``runuser -u`` keeps the environment (RABBITMQ_*, PG*), but sets HOME to the user's."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", user, "--"]
    return ["su", user, "-s", "/bin/sh", "-c"]  # pragma: no cover - runuser exists on every modern Linux


def _chown(path: Path, user: str) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        for root, _dirs, files in os.walk(path):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for name in files:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


class ServiceUnavailable(RuntimeError):
    """The binaries or the user a private server needs are missing."""


# --- PostgreSQL -----------------------------------------------------------------

def _postgres_bin() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise ServiceUnavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")


#: The machine's own services: never the target of a stop or a kill.
MACHINE_POSTGRES_PORT = 5432
MACHINE_RABBITMQ_PORT = 5672
#: What every private server's directory and RabbitMQ node name start with.
PRIVATE_DIR_PREFIX = "billing-faults-"
PRIVATE_NODE_PREFIX = "rabbit_fault_"


class _PrivateServer:
    """What the two private servers share: a restart, and the check, before
    any stop or kill, that the target is this suite's own server."""

    port: int
    root: Path

    def restart(self, down_seconds: float) -> float:
        """Stop, stay down ``down_seconds``, start; returns the monotonic time it was back."""
        self.stop()
        time.sleep(down_seconds)  # the outage itself: time must pass
        self.start()
        return time.monotonic()

    def _ensure_private(self) -> None:
        """Refuse to stop or kill anything but a server this suite started in
        its own directory on its own port."""
        if self.port in (MACHINE_POSTGRES_PORT, MACHINE_RABBITMQ_PORT) or PRIVATE_DIR_PREFIX not in str(self.root):
            raise RuntimeError(f"refusing to stop a server that is not the suite's own ({self.root}, port {self.port})")

    def _owns(self, pid: int) -> bool:
        """Whether ``pid`` is this server's: the process this suite started or
        one of its descendants, or a process whose command line names the
        suite's own directory (RabbitMQ's beam may leave our process tree).
        A pid read from a file is checked here before it is signalled: after a
        crash the file may name a pid the system has since given to another
        process."""
        if self.process is not None and (pid == self.process.pid or pid in descendants_of(self.process.pid)):
            return True
        try:
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        return str(self.root) in command_line


class PrivatePostgres(_PrivateServer):
    """A PostgreSQL cluster of the suite's own, on a free port.

    Parameters:
      base: a directory the suite owns; the cluster lives in ``base/pg``.
    """

    USER = "postgres"

    def __init__(self, base: Path) -> None:
        self.bin = _postgres_bin()
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(self.USER)
            except KeyError as exc:
                raise ServiceUnavailable("running as root needs a 'postgres' user for initdb") from exc
        self.root = base / "pg"
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.logfile = self.root / "server.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    # lifecycle
    def init(self) -> PrivatePostgres:
        self.root.mkdir(parents=True)
        self.sockets.mkdir()
        _chown(self.root, self.USER)
        os.chmod(self.root, 0o700)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> None:
        """Run the postmaster as a child of this process (not daemonized by
        pg_ctl): this process reaps it, so after a kill -9 no zombie holds the
        pid its lock files name, and the next start is not refused."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("private PostgreSQL already running")
        command = [*_as_user(self.USER), str(self.bin / "postgres"), "-D", str(self.data),
                   "-c", "listen_addresses=127.0.0.1", "-p", str(self.port), "-k", str(self.sockets),
                   "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                   "-c", "max_connections=300"]
        log = open(self.logfile, "a")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd="/", start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"private PostgreSQL exited ({self.process.returncode}):\n{self.log()}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"private PostgreSQL on port {self.port} not ready after {START_TIMEOUT}s:\n{self.log()}")
            time.sleep(POLL_SECONDS)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back open transactions, close every connection)."""
        self._ensure_private()
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(STOP_TIMEOUT), "stop")
        self._reap()

    def _reap(self) -> None:
        if self.process is not None:
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:  # pragma: no cover - pg_ctl waited for it already
                pass

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends (a crash; the next start recovers)."""
        self._ensure_private()
        pid = self.postmaster_pid()
        if pid and self._owns(pid):
            pids = kill_tree(pid)
            wait_gone(pids, STOP_TIMEOUT)
        self._reap()

    def destroy(self) -> None:
        self._ensure_private()
        if self.running():
            try:
                self.stop("immediate")
            except subprocess.CalledProcessError:
                self.kill()

    # state
    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        pid = self.postmaster_pid()
        return bool(pid and alive(pid) and self._owns(pid))

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def ready(self) -> bool:
        import psycopg2

        try:
            psycopg2.connect(self.url(), connect_timeout=2).close()
            return True
        except psycopg2.OperationalError:
            return False

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() >= deadline:
                raise RuntimeError(f"private PostgreSQL on port {self.port} not ready after {timeout}s:\n{self.log()}")
            time.sleep(POLL_SECONDS)

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg2

        name = f"faults_{secrets.token_hex(4)}"
        conn = psycopg2.connect(self.url(), connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def log(self) -> str:
        try:
            return self.logfile.read_text()[-3000:]
        except OSError:
            return ""

    def _run(self, program: str, *args: str) -> None:
        command = [*_as_user(self.USER), str(self.bin / program), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT + 30, cwd="/")
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, command, result.stdout,
                                                f"{result.stderr}\n--- server log\n{self.log()}")


# --- RabbitMQ -------------------------------------------------------------------

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


def _rabbitmq_programs() -> tuple[str, str]:
    server = RABBITMQ_SERVER if os.path.exists(RABBITMQ_SERVER) else shutil.which("rabbitmq-server")
    ctl = RABBITMQCTL if os.path.exists(RABBITMQCTL) else shutil.which("rabbitmqctl")
    if not server or not ctl:
        raise ServiceUnavailable("RabbitMQ server (rabbitmq-server, rabbitmqctl) is not installed")
    return server, ctl


class PrivateRabbitMQ(_PrivateServer):
    """A second RabbitMQ node of the suite's own (own name, ports, data, logs).

    Parameters:
      base: a directory the suite owns; the node lives in ``base/rabbitmq``.
    """

    USER = "rabbitmq"

    def __init__(self, base: Path) -> None:
        self.server, self.ctl = _rabbitmq_programs()
        self.user = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(self.USER)
                self.user = self.USER
            except KeyError as exc:
                raise ServiceUnavailable("running as root needs the 'rabbitmq' user") from exc
        self.root = base / "rabbitmq"
        self.node = f"{PRIVATE_NODE_PREFIX}{secrets.token_hex(4)}@localhost"
        self.port = free_port()
        self.dist_port = free_port_below(55000)
        self.process: subprocess.Popen | None = None
        self.logfile = self.root / "console.log"
        #: How long the last start took until AMQP answered.
        self.boot_seconds = 0.0

    def init(self) -> PrivateRabbitMQ:
        for sub in ("mnesia", "log"):
            (self.root / sub).mkdir(parents=True)
        (self.root / "enabled_plugins").write_text("[].\n")
        # Our own config: the machine's names listeners.tcp.local = 127.0.0.1:5672.
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            # this machine's disk may be small; the suite holds a few MB
            "disk_free_limit.absolute = 10MB\n"
        )
        (self.root / "rabbitmq-env.conf").write_text("ERL_EPMD_ADDRESS=127.0.0.1\n")
        _chown(self.root, self.USER)
        os.chmod(self.root, 0o755)
        return self

    @property
    def env(self) -> dict:
        root = self.root
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")},
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_PID_FILE": str(root / "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _prefix(self) -> list[str]:
        return _as_user(self.user) if self.user else []

    # lifecycle
    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("private RabbitMQ already running")
        log = open(self.logfile, "a")
        self.process = subprocess.Popen([*self._prefix(), self.server], env=self.env, cwd=str(self.root),
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        began = time.monotonic()
        self.wait_ready()
        self.boot_seconds = time.monotonic() - began

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"private RabbitMQ {self.node} exited ({self.process.returncode}):\n{self.log()}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"private RabbitMQ {self.node} not ready after {timeout}s:\n{self.log()}")
            time.sleep(POLL_SECONDS)

    def ready(self) -> bool:
        """True once an AMQP client can open a channel."""
        import pika

        if not port_open(self.port):
            return False
        try:
            params = pika.URLParameters(self.url() + "?connection_attempts=1&socket_timeout=2&blocked_connection_timeout=2")
            connection = pika.BlockingConnection(params)
            connection.channel()
            connection.close()
            return True
        except Exception:  # pika raises many kinds while the node boots
            return False

    def stop(self) -> None:
        """``rabbitmqctl stop`` (graceful: persistent messages survive), then wait for the process."""
        self._ensure_private()
        self.ctl_run("stop")
        if self.process is not None:
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        deadline = time.monotonic() + STOP_TIMEOUT
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)

    def kill(self) -> None:
        """SIGKILL the node (the server process tree this object started)."""
        self._ensure_private()
        if self.process is None:
            return
        pids = kill_tree(self.process.pid)
        beam = self.beam_pid()
        if beam and beam not in pids and alive(beam) and self._owns(beam):
            os.kill(beam, signal.SIGKILL)
            pids.append(beam)
        wait_gone(pids, STOP_TIMEOUT)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass

    def destroy(self) -> None:
        self._ensure_private()
        if self.process is not None and self.process.poll() is None:
            try:
                self.ctl_run("stop", timeout=30)
                self.process.wait(timeout=30)
            except (subprocess.SubprocessError, RuntimeError):
                self.kill()

    # administration
    def ctl_run(self, *args: str, timeout: float = STOP_TIMEOUT) -> str:
        if not self.node.startswith(PRIVATE_NODE_PREFIX):
            raise RuntimeError(f"refusing to control RabbitMQ node {self.node}: not the suite's own")
        command = [*self._prefix(), self.ctl, "-n", self.node, *args]
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout, cwd="/")
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed ({result.returncode}): "
                               f"{result.stdout}{result.stderr}")
        return result.stdout

    def add_vhost(self, name: str) -> str:
        """A fresh vhost (guest may use it); returns its AMQP URL."""
        self.ctl_run("add_vhost", name)
        self.ctl_run("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return self.url(name)

    def beam_pid(self) -> int | None:
        try:
            return int((self.root / "rabbitmq.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def url(self, vhost: str = "/") -> str:
        from urllib.parse import quote

        return f"amqp://guest:guest@127.0.0.1:{self.port}/{quote(vhost, safe='')}"

    def log(self) -> str:
        try:
            return self.logfile.read_text()[-3000:]
        except OSError:
            return ""


def make_base_dir() -> Path:
    """A temporary directory other users may enter (the servers run as postgres
    and rabbitmq; pytest's own tmp dirs are private to root)."""
    base = Path(tempfile.mkdtemp(prefix=PRIVATE_DIR_PREFIX))
    os.chmod(base, 0o755)
    return base
