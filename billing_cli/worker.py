"""``billing worker``: the production worker, N Dramatiq worker processes that
are replaced when they die.

``dramatiq tasks.worker --processes N`` stops its whole group when one worker process
dies (kill -9, out of memory), and nothing starts it again. Here a small
supervisor runs N independent children, each one Dramatiq worker (this module
run as ``python -m billing_cli.worker``: ``tasks.setup()``, then
``dramatiq.Worker``, as ``dramatiq tasks.worker`` runs its worker processes), and:

- starts a new child in the place of one that died, after a backoff that grows
  while children die young (a crash at start-up does not spin), one log line
  per restart;
- on SIGTERM or SIGINT asks every child to stop (each finishes its messages),
  kills those still running after ``--stop-timeout`` seconds, and exits.

Each child is a single process (no Dramatiq master of its own), so a killed
child leaves nothing behind, and it receives SIGTERM if the supervisor itself
dies (Linux parent-death signal), so children never outlive it unsupervised.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import click
import structlog

from billing.config import DEFAULT_WORKER_PROCESSES, DEFAULT_WORKER_TIMEOUT_MS

log = structlog.get_logger(__name__)

#: Threads per process when neither --threads nor WORKER_THREADS says (the
#: Procfile's default; the embedded mode has its own, EMBEDDED_WORKER_THREADS).
DEFAULT_THREADS = 8
#: Seconds a child gets to finish its messages on stop before it is killed
#: (below the 30 s most process managers allow before their own SIGKILL).
DEFAULT_STOP_TIMEOUT_SECONDS = 25.0
#: Wait before replacing a child that died young; doubled for every further
#: young death in a row, up to :data:`RESTART_BACKOFF_MAX_SECONDS`.
RESTART_BACKOFF_MIN_SECONDS = 1.0
RESTART_BACKOFF_MAX_SECONDS = 60.0
#: A child that ran at least this long died of something else than its
#: start-up: its replacement starts after the shortest backoff again.
STABLE_AFTER_SECONDS = 30.0
#: How often the supervisor looks at its children.
POLL_SECONDS = 0.2
#: Exit status of a child that was given a queue no actor uses: restarting it
#: would fail the same way.
EXIT_USAGE = 2
#: Linux prctl option: the signal a child gets when its parent dies.
PR_SET_PDEATHSIG = 1
#: stdlib log lines (Dramatiq's own) of a child: several processes share one
#: stream, so each line names its process.
CHILD_LOG_FORMAT = "[%(asctime)s] [PID %(process)d] [%(threadName)s] [%(name)s] [%(levelname)s] %(message)s"


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"


@dataclass
class _Slot:
    """One of the N places a child runs in."""

    index: int
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    young_deaths: int = 0
    restart_at: float = 0.0


class Supervisor:
    """Keeps ``processes`` children of ``command`` running until stopped.

    Parameters:
      processes: how many children run at once.
      command: the argv of one child.
      stop_timeout: seconds children get on stop before SIGKILL.
      env: the children's environment (default: this process's).
    """

    def __init__(self, *, processes: int, command: list[str], stop_timeout: float = DEFAULT_STOP_TIMEOUT_SECONDS,
                 env: dict | None = None) -> None:
        self.command = command
        self.stop_timeout = stop_timeout
        self.env = env
        self.slots = [_Slot(index=i) for i in range(processes)]
        self.stopping = threading.Event()

    def request_stop(self, signum=None, frame=None) -> None:
        """Signal handler: stop the children and return from :meth:`run`."""
        self.stopping.set()

    def run(self) -> int:
        """Start the children and keep them running until asked to stop.

        Returns:
          The exit status: 0 after a requested stop, EXIT_USAGE when children
          cannot run with the options given.
        """
        for slot in self.slots:
            self._start(slot)
        log.info("worker processes started", children=self.children())
        status = 0
        while not self.stopping.is_set():
            now = time.monotonic()
            for slot in self.slots:
                if slot.process is not None and slot.process.poll() is not None:
                    if slot.process.returncode == EXIT_USAGE:
                        log.error("worker process refused its options; stopping", slot=slot.index)
                        self.stopping.set()
                        status = EXIT_USAGE
                        break
                    self._schedule_restart(slot, now)
                if slot.process is None and not self.stopping.is_set() and now >= slot.restart_at:
                    self._start(slot)
            self.stopping.wait(POLL_SECONDS)
        self._stop_all()
        return status

    def children(self) -> list[int]:
        """Pids of the children running now."""
        return [slot.process.pid for slot in self.slots if slot.process is not None and slot.process.poll() is None]

    def _start(self, slot: _Slot) -> None:
        slot.process = subprocess.Popen(self.command, env=self.env)
        slot.started_at = time.monotonic()

    def _schedule_restart(self, slot: _Slot, now: float) -> None:
        process = slot.process
        lived = now - slot.started_at
        slot.young_deaths = 0 if lived >= STABLE_AFTER_SECONDS else slot.young_deaths + 1
        delay = 0.0 if slot.young_deaths == 0 else min(
            RESTART_BACKOFF_MAX_SECONDS, RESTART_BACKOFF_MIN_SECONDS * 2 ** (slot.young_deaths - 1))
        # Even a child that lived long waits the shortest backoff: whatever
        # killed it may still be there.
        delay = max(delay, RESTART_BACKOFF_MIN_SECONDS)
        slot.restart_at = now + delay
        slot.process = None
        log.warning("worker process died; restarting", slot=slot.index, child=process.pid,
                    exit=_describe_exit(process.returncode), lived=round(lived, 1), restart_in=delay)

    def _stop_all(self) -> None:
        running = [slot.process for slot in self.slots if slot.process is not None and slot.process.poll() is None]
        log.info("stopping worker processes", children=[p.pid for p in running], timeout=self.stop_timeout)
        for process in running:
            _signal(process, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker process did not stop in time; killing it", child=process.pid)
                _signal(process, signal.SIGKILL)
                process.wait()
        log.info("worker processes stopped")


def _signal(process: subprocess.Popen, signum: int) -> None:
    try:
        process.send_signal(signum)
    except ProcessLookupError:  # it died meanwhile
        pass


def child_command(*, threads: int, queues: tuple[str, ...], worker_timeout_ms: int, stop_timeout: float) -> list[str]:
    """The argv of one worker child.

    Parameters:
      threads: worker threads of the child.
      queues: queues to consume (empty: every queue).
      worker_timeout_ms: how often (ms) delayed messages are released.
      stop_timeout: seconds the supervisor waits on stop; the child stops its
        worker a little before that.
    """
    command = [sys.executable, "-m", "billing_cli.worker", "--threads", str(threads),
               "--worker-timeout", str(worker_timeout_ms), "--stop-timeout", str(stop_timeout),
               "--parent", str(os.getpid())]
    if queues:
        command += ["--queues", *queues]
    return command


@click.command("worker")
@click.option("--processes", type=click.IntRange(min=1), default=None,
              help=f"Worker processes (default WORKER_PROCESSES or {DEFAULT_WORKER_PROCESSES}).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help=f"Threads per process (default WORKER_THREADS or {DEFAULT_THREADS}).")
@click.option("-Q", "--queues", multiple=True,
              help="Consume only these queues (repeat, or comma-separated; default: all).")
@click.option("--stop-timeout", type=click.FloatRange(min=0), default=DEFAULT_STOP_TIMEOUT_SECONDS, show_default=True,
              help="Seconds children get to finish their messages on SIGTERM before they are killed.")
def worker(processes, threads, queues, stop_timeout) -> None:
    """The production worker: N Dramatiq worker processes, each replaced when it dies."""
    from billing_cli.main import preflight

    # The settings, logging, and one readable line (not N crash-looping
    # children) for a database that is unreachable, missing or not upgraded.
    settings = preflight()
    processes = processes or settings.worker_processes
    threads = threads or settings.worker_threads or DEFAULT_THREADS
    _check_tenant_bound(settings.send_tenant_concurrency, threads=threads)
    worker_timeout_ms = settings.worker_timeout_ms
    names = tuple(name.strip() for item in queues for name in item.split(",") if name.strip())
    _check_queues(names)
    supervisor = Supervisor(
        processes=processes, stop_timeout=stop_timeout,
        command=child_command(threads=threads, queues=names, worker_timeout_ms=worker_timeout_ms,
                              stop_timeout=stop_timeout),
    )
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    sys.exit(supervisor.run())


def _check_tenant_bound(configured: int | None, *, threads: int) -> None:
    """Refuse a SEND_TENANT_CONCURRENCY the children would refuse at boot, in one line."""
    from billing.fairness import limit_for

    try:
        limit_for(configured=configured, threads=threads)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _check_queues(names: tuple[str, ...]) -> None:
    """Refuse unknown queue names before starting children that would fail."""
    if not names:
        return
    from tasks.registry import queue_names

    known = set(queue_names())
    unknown = sorted(set(names) - known)
    if unknown:
        raise click.UsageError(f"unknown queue(s) {', '.join(unknown)}; the queues are {', '.join(sorted(known))}")


# --- the child ------------------------------------------------------------

def _die_with_parent(parent: int) -> None:
    """Get SIGTERM when the supervisor dies (Linux), so no child runs unsupervised."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's stop still reaches us
        return
    if parent and os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def run_child(*, threads: int, queues: list[str], worker_timeout_ms: int, stop_timeout: float, parent: int) -> int:
    """One worker process: what ``dramatiq tasks.worker --processes 1`` runs in its
    worker process, without a master that would stop with it.

    Parameters:
      threads: worker threads.
      queues: queues to consume (empty: all).
      worker_timeout_ms: how often (ms) delayed messages are released.
      stop_timeout: seconds the supervisor allows for a stop.
      parent: the supervisor's pid (0: none).

    Returns:
      The exit status.
    """
    import logging

    stopping = threading.Event()
    # A second signal (Ctrl-C reaches the children too) changes nothing: the
    # supervisor kills a child that does not stop in time.
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stopping.set())
    _die_with_parent(parent)
    # Before ``tasks.setup()`` configures logging (its basicConfig then keeps
    # this format for the stdlib loggers, Dramatiq's among them).
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=CHILD_LOG_FORMAT)

    import dramatiq

    import tasks

    broker = tasks.setup().broker  # settings from the environment, as the supervisor's
    unknown = set(queues) - broker.get_declared_queues()
    if unknown:
        log.error("unknown queues", queues=sorted(unknown))
        return EXIT_USAGE
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, queues=set(queues) or None, worker_threads=threads,
                             worker_timeout=worker_timeout_ms)
    worker.start()
    log.info("worker process ready", threads=threads, queues=sorted(queues) or "all")
    stopping.wait()
    # Leave the supervisor a moment to see the exit before its own deadline.
    worker.stop(timeout=int(max(1.0, stop_timeout - 2) * 1000))
    broker.close()
    return 0


def _child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m billing_cli.worker", description="One worker process of billing worker.")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--queues", nargs="*", default=[])
    parser.add_argument("--worker-timeout", type=int, default=DEFAULT_WORKER_TIMEOUT_MS)
    parser.add_argument("--stop-timeout", type=float, default=DEFAULT_STOP_TIMEOUT_SECONDS)
    parser.add_argument("--parent", type=int, default=0)
    args = parser.parse_args(argv)
    return run_child(threads=args.threads, queues=args.queues, worker_timeout_ms=args.worker_timeout,
                     stop_timeout=args.stop_timeout, parent=args.parent)


if __name__ == "__main__":
    sys.exit(_child_main())
