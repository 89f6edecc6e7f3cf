"""What the in-process tests of billing_cli/, scheduler/ and tasks/ share:
running the ``billing`` command inside the test process, keeping the
process-wide state those packages change (structlog's output stream, signal
handlers) from leaking into later tests, and a campaign booked as dispatch books it."""
from __future__ import annotations

import signal
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
import structlog
from click.testing import CliRunner, Result

#: Signals the worker supervisor, its child and the scheduler take over.
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class Cli:
    """The ``billing`` command run in this process on one database.

    Parameters:
      database_url: the DATABASE_URL every invocation gets.
      monkeypatch: sets the environment for the test only.
    """

    database_url: str
    monkeypatch: pytest.MonkeyPatch

    def __call__(self, *args: str, ok: bool = True, env: dict | None = None) -> Result:
        """Run ``billing ARGS``; ``ok`` asserts exit status 0.

        Parameters:
          args: the command line after ``billing``.
          ok: fail the test unless the command succeeded.
          env: extra environment variables (DATABASE_URL included, to override).
        """
        from billing_cli.main import main

        self.monkeypatch.setenv("DATABASE_URL", self.database_url)
        for name, value in (env or {}).items():
            self.monkeypatch.setenv(name, value)
        # configure_logging binds structlog to the sys.stderr of the moment,
        # which CliRunner swaps for a buffer it closes afterwards.
        saved = structlog.get_config()
        try:
            result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        finally:
            structlog.configure(**saved)
        if ok:
            assert result.exit_code == 0, f"billing {' '.join(args)}: {result.stderr or result.output}"
        return result


def one_error_line(result: Result) -> str:
    """The single ``Error: ...`` line a failed command printed on stderr
    (asserts there was exactly one line and no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code != 0, result.output
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture
def restore_signals():
    """Put back the SIGTERM/SIGINT handlers a test's code installs."""
    saved = {signum: signal.getsignal(signum) for signum in HANDLED_SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


#: How far ahead the tests' dispatch passes book (the production default).
DISPATCH_HORIZON = timedelta(seconds=60)


def book(queue_id, *, now: datetime | None = None) -> list[tuple[int, datetime]]:
    """One dispatch pass of ``queue_id``: the (contact id, slot) bookings it
    made, as the dispatch actor would publish them (not yet marked enqueued)."""
    from billing import dispatch

    return dispatch.plan_dispatch(queue_id, horizon=DISPATCH_HORIZON, batch_size=500, now=now).sends


def campaign(setup, count: int, *, external_id: str = "c1", start: int = 0, **request):
    """A running campaign of ``count`` contacts for ``setup``'s tenant (tests.factories.Setup)."""
    from billing import campaigns
    from tests.factories import contact, phones

    body = {"external_id": external_id, "contacts": [contact(p) for p in phones(count, start=start)], **request}
    return campaigns.create_campaign(setup.tenant, template_type="overdue", request=body)
