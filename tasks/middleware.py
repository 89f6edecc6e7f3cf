"""Dramatiq middleware: per-message database connections, log context,
worker heartbeats, and quiet consumer restarts."""
from __future__ import annotations

import logging
import os
import threading

import dramatiq
import structlog
from dramatiq.common import q_name

from billing import workers
from billing.adapters.db import database
from billing.logconfig import PROPAGATED_KEYS

log = structlog.get_logger(__name__)

#: Message option that carries the enqueuer's log context.
LOG_CONTEXT_OPTION = "log_context"

#: What Dramatiq's consumer threads log for every broken or refused broker
#: connection (and every second of a RabbitMQ outage, per queue). The broker's
#: outage tracker (tasks.broker.BrokerOutage) logs one line per reconnect
#: attempt instead, so these are dropped.
CONSUMER_RESTART_MESSAGES = ("Consumer encountered a connection error", "Restarting consumer in")


class DatabaseConnection(dramatiq.Middleware):
    """Check a database connection out for each message and back in after,
    so a connection broken by a database restart is not reused forever."""

    def before_process_message(self, broker, message):
        database.connect(reuse_if_open=True)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if not database.is_closed():
            database.close()

    after_skip_message = after_process_message


class LogContext(dramatiq.Middleware):
    """Carry request id, tenant and queue from the enqueuer into the actor."""

    def before_enqueue(self, broker, message, delay):
        context = structlog.contextvars.get_contextvars()
        carried = {key: context[key] for key in PROPAGATED_KEYS if key in context}
        if carried:
            message.options[LOG_CONTEXT_OPTION] = carried

    def before_process_message(self, broker, message):
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            **message.options.get(LOG_CONTEXT_OPTION, {}), actor=message.actor_name, message_id=message.message_id
        )

    def after_process_message(self, broker, message, *, result=None, exception=None):
        structlog.contextvars.clear_contextvars()

    after_skip_message = after_process_message


class HeartbeatThread:
    """Registers this process in ``heartbeat`` and beats every
    :data:`billing.workers.BEAT_INTERVAL` from a daemon thread.

    A database outage costs one WARNING when the first beat fails and one INFO
    when beating resumes, not a line per beat. A registration that failed (the
    database was down at start) is retried at every beat.

    Parameters:
      kind: ``worker`` or ``scheduler`` (billing.workers kinds).
      info: what ops should see about the process; :meth:`update_info` changes it.
    """

    def __init__(self, *, kind: str, info: dict) -> None:
        self.kind = kind
        self._info = dict(info)
        self._info_changed = False
        self._registered = False
        self._failing = False
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Register now (so claims name this process from the first message
        on), then beat in the background."""
        self._tick()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.kind}", daemon=True)
        self._thread.start()

    def update_info(self, **changes) -> None:
        """Change what the row's ``info`` says (written at once if the
        database answers, else at the next beat that reaches it).

        Parameters:
          changes: keys to set in ``info`` (e.g. ``leader=True``).
        """
        with self._lock:
            self._info.update(changes)
            self._info_changed = True
        self._tick()

    def stop(self, *, unregister: bool = True) -> None:
        """Stop beating; on a clean stop, mark the row stopped so recovery
        releases this process's claims at once.

        Parameters:
          unregister: False leaves the row to go stale (claims then wait for
            :data:`billing.workers.DEAD_AFTER`).
        """
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=workers.BEAT_INTERVAL.total_seconds() * 2)
        if not unregister or not self._registered:
            return
        try:
            with database.connection_context():
                workers.unregister()
        except Exception as exc:  # the database is down: the row goes stale instead
            log.warning("heartbeat unregister failed", kind=self.kind, error=str(exc).strip())

    def _run(self) -> None:
        while not self._stopped.wait(workers.BEAT_INTERVAL.total_seconds()):
            self._tick()

    def _tick(self) -> None:
        with self._lock:  # one writer at a time: the beat thread or update_info
            try:
                with database.connection_context():
                    self._write()
            except Exception as exc:  # any database error: beating must go on afterwards
                if not self._failing:
                    log.warning("heartbeat failed; retrying every beat until the database answers",
                                kind=self.kind, error=" ".join(str(exc).split()))
                self._failing = True
                return
            if self._failing:
                log.info("heartbeat resumed", kind=self.kind, process=workers.current_id())
            self._failing = False

    def _write(self) -> None:
        if not self._registered:
            workers.register(kind=self.kind, info=self._info)
            self._registered = True
            self._info_changed = False
            log.info("process registered", kind=self.kind, process=workers.current_id(), **self._info)
            return
        workers.beat()
        if self._info_changed:
            workers.set_info(self._info)
            self._info_changed = False


class WorkerHeartbeat(dramatiq.Middleware):
    """Register each worker process and beat while it runs.

    Worker boot and shutdown, not process boot: ``dramatiq.Worker.start()`` and
    ``stop()`` emit them wherever a worker runs (``billing worker``, the
    ``dramatiq`` CLI, the embedded ``billing run``), while process_boot comes
    only from the ``dramatiq`` CLI. Registration happens before the worker's
    threads start, so every claim names this process; the row is marked
    stopped only after the worker's threads finished their messages, so
    recovery never releases a send still in progress.
    """

    def __init__(self) -> None:
        self.heartbeat: HeartbeatThread | None = None

    def before_worker_boot(self, broker, worker):
        # Dramatiq keeps a worker's -Q queues as its consumer whitelist; the
        # StubBroker declares the delay queues too (same queue for ops).
        chosen = getattr(worker, "consumer_whitelist", None) or broker.get_declared_queues()
        queues = sorted({q_name(queue) for queue in chosen})
        self.heartbeat = HeartbeatThread(
            kind="worker", info={"threads": worker.worker_threads, "queues": queues, "pid": os.getpid()}
        )
        self.heartbeat.start()

    def after_worker_shutdown(self, broker, worker):
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None


class _DropConsumerRestarts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(CONSUMER_RESTART_MESSAGES)


class QuietConsumerRestarts(dramatiq.Middleware):
    """Drop Dramatiq's per-consumer "connection error / restarting" lines
    (two per queue and delay queue, every restart); the broker's outage
    tracker reports connection losses and reconnect attempts once per process."""

    _filter = _DropConsumerRestarts()

    def after_consumer_thread_boot(self, broker, thread):
        if self._filter not in thread.logger.filters:
            thread.logger.addFilter(self._filter)
