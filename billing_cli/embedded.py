"""The embedded all-in-one mode: SQLite, an in-process Dramatiq worker, the
scheduler thread and the HTTP server, in one process with nothing to install."""
from __future__ import annotations

import signal
import sys
import threading
import time

import click
import dramatiq
import structlog
from werkzeug.serving import WSGIRequestHandler, make_server

from billing import bootstrap, recovery
from billing.adapters import migrations
from billing.config import Settings
from billing.errors import redact_url

log = structlog.get_logger(__name__)

#: How often (ms) the worker releases due delayed messages: Dramatiq's default
#: of a second makes sends late by up to a second, and bunches them.
WORKER_POLL_MS = 100

#: Threads of the in-process worker when WORKER_THREADS is unset: the web
#: server and the scheduler share the process (and SQLite has one writer).
EMBEDDED_WORKER_THREADS = 4


#: The HTTP Server header: the product, never a version (werkzeug's own names
#: its version and Python's, which tells an attacker what to try).
SERVER_HEADER = "billing"


class VersionlessHandler(WSGIRequestHandler):
    """werkzeug's request handler with a Server header that names no version."""

    def version_string(self) -> str:
        return SERVER_HEADER


class EmbeddedWorker(dramatiq.Worker):
    """Dramatiq's worker, with the delay queues of the in-process StubBroker
    consumed as delay queues.

    The StubBroker lists its delay queues (``send.DQ``...) among its ordinary
    queues, so Dramatiq's worker starts their consumers as ordinary ones, with
    the small prefetch of ordinary queues (2 x threads = 8) instead of the
    delay prefetch (1000 x threads). A delay queue's consumer then holds only
    the 8 oldest delayed messages and reads the next one when one of those
    falls due: delayed messages leave in publish order, not at their etas. A
    dispatch that books a queue's next 60 s of slots made every other queue's
    sends published after it wait for those slots to pass: a pause, resume or
    cancel of one queue, whose stale and re-booked messages fill the window,
    held other tenants' sends for up to a horizon (issue 8, point 7: 18-33 s
    reported, 50 s measured). RabbitMQ's broker lists only canonical queue
    names, so the production worker is not affected.
    """

    def _add_consumer(self, queue_name: str, *, delay: bool = False) -> None:
        super()._add_consumer(queue_name, delay=delay or queue_name in self.broker.get_declared_delay_queues())


def run_embedded(*, host: str | None, port: int | None, settings: Settings | None = None) -> None:
    """Migrate, bootstrap the demo tenant, recover, then serve until a signal.

    Parameters:
      host: listen address (default: settings).
      port: listen port (default: settings).
      settings: the process settings (default: from the environment).
    """
    import tasks
    from scheduler import build_scheduler
    from scheduler.leader import Leadership
    from web import create_app

    wiring = tasks.setup(settings=settings)  # a no-op when the CLI wired it already
    settings = wiring.settings
    host = host or settings.host
    port = port if port is not None else settings.port

    migrations.upgrade()
    demo = bootstrap.ensure_demo()
    leadership = Leadership(settings.database_url)
    leads = leadership.try_acquire()
    if leads and settings.embedded_broker:
        # The in-memory broker starts empty: whatever was booked or in flight
        # when this process last stopped has no message any more. (Only the
        # process that leads may say so: another one may be sending.)
        released = recovery.release_in_memory_work()
        if released["claims"] or released["bookings"]:
            log.info("released the work of the previous run", **released)

    worker = EmbeddedWorker(wiring.broker, worker_threads=settings.worker_threads or EMBEDDED_WORKER_THREADS,
                            worker_timeout=WORKER_POLL_MS)
    worker.start()
    found = recovery.recover()
    for queue_id in found.queues:
        tasks.dispatch.send(queue_id)
    tasks.enqueue_callbacks(found.callbacks)
    scheduler = build_scheduler(blocking=False, settings=settings)
    if leads:
        scheduler.start()
    else:
        log.warning("another process runs the scheduler on this database; this one serves and works only")

    server = make_server(host, port, create_app(settings), threaded=True, request_handler=VersionlessHandler)
    base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{server.server_port}"
    _print_banner(base_url=base_url, demo=demo, settings=settings, on_terminal=sys.stdout.isatty())

    stopping = threading.Event()

    def _stop(signum, frame):
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=False)
        worker.stop(timeout=10_000)
        log.info("stopped")


#: What stands for the demo key when the output is not a terminal.
KEY_PLACEHOLDER = "bk_..."


def _print_banner(*, base_url: str, demo: bootstrap.Demo, settings: Settings, on_terminal: bool) -> None:
    """Where the service runs, the demo key and a curl command that uses it.

    Parameters:
      base_url: where the server answers.
      demo: the demo tenant and its fresh key.
      settings: the database and broker to name.
      on_terminal: stdout is a terminal. Otherwise it is collected somewhere
        (a file, a process manager, next to the JSON log) and the key is not
        written: ``billing apikey create --tenant demo`` makes one to copy.
    """
    external_id = f"demo-{int(time.time())}"
    key = demo.api_key if on_terminal else KEY_PLACEHOLDER
    shown = (f"Demo API key (new at every start): {key}" if on_terminal else
             f"Demo API key: not shown, the output is not a terminal; make one with "
             f"`{sys.argv[0]} apikey create --tenant {demo.tenant.name}`")
    click.echo(
        f"\nBilling is running at {base_url}  (database: {redact_url(settings.database_url)}, "
        f"broker: {'embedded' if settings.embedded_broker else settings.broker_url.split('@')[-1]})\n"
        f"Demo tenant '{demo.tenant.name}': sandbox WhatsApp instance, Portuguese templates.\n"
        f"{shown}\n\n"
        f"Send a reminder:\n\n{bootstrap.demo_curl(base_url=base_url, api_key=key, external_id=external_id)}\n\n"
        "Then follow it: the answer's queue_id with GET /api/v1/billing/queue/<queue_id>/status,\n"
        f"and see what was 'sent' with: {sys.argv[0]} outbox   (Ctrl-C stops)\n",
        err=False,
    )
