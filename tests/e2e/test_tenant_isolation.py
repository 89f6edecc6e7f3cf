"""One tenant's hanging gateway does not hold another tenant's sends (issue
10, point 5), on both deployments as users run them: the production stack
(PostgreSQL, RabbitMQ, ``billing worker`` with 2 processes x 4 threads,
``billing scheduler``, gunicorn) and the embedded ``billing run`` (SQLite,
one process, 4 worker threads).

Tenant ``hung`` sends through a fake Evolution that takes every message and
never answers (its instance waits up to 60 s for an answer), with more
contacts than there are worker threads. Tenant ``other`` then posts a
one-contact campaign. Each worker process runs at most
SEND_TENANT_CONCURRENCY of a tenant's sends at once (default 2, below the
threads), so ``hung`` holds 2 threads per process, never all, and ``other``'s
message goes out at once. The test prints ``other``'s delay and ``hung``'s
sends in flight.

Run with ``SEND_TENANT_CONCURRENCY=0`` (the bound off) to see the failure it
prevents: ``hung`` fills every thread and ``other`` waits for the hung sends'
timeout (about 60 s).
"""
from __future__ import annotations

import contextlib
import os
import time
from datetime import datetime
from pathlib import Path

import pytest

from billing.fairness import limit_for
from tests.e2e.stack import Stack, running_stack, wait_until
from tests.factories import phones
from tests.fakes.evolution import FakeEvolution

#: Worker sizing of each deployment: (processes, threads per process).
SIZING = {"embedded": (1, 4), "production": (2, 4)}
#: How long the hung tenant's instance waits for its gateway's answer (the
#: longest delay the other tenant would see without the bound).
HUNG_TIMEOUT_SECONDS = 60
#: The fake holds every send's answer this long (it is stopped first at the end).
HANG_SECONDS = 600
#: The other tenant's message must go out within this long of its campaign.
MAX_OTHER_DELAY_SECONDS = 5
#: How long the hung tenant's sends may take to fill what the bound allows.
FILL_TIMEOUT = 30
EVOLUTION_KEY = "evo-hung-key"
EVOLUTION_INSTANCE = "billing"  # FakeEvolution's only instance


@contextlib.contextmanager
def _deployment(kind: str, workdir: Path, rabbitmq_url: str | None):
    processes, threads = SIZING[kind]
    extra = {"WORKER_THREADS": threads}
    if kind == "embedded":
        stack = Stack(kind="embedded", env={"DATABASE_URL": f"sqlite:///{workdir}/billing.sqlite3", "BROKER_URL": ""},
                      workdir=workdir, extra_env=extra)
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()
        return
    with running_stack(workdir, rabbitmq_url, worker_processes=processes, worker_threads=threads, **extra) as stack:
        yield stack


@pytest.fixture(params=["embedded", pytest.param("production", marks=[pytest.mark.postgres, pytest.mark.rabbitmq])])
def deployment(request, tmp_path):
    rabbitmq_url = request.getfixturevalue("rabbitmq_url") if request.param == "production" else None
    with _deployment(request.param, tmp_path, rabbitmq_url) as stack:
        yield stack


def _tenant(stack: Stack, name: str, instance_args: list[str]) -> str:
    stack.cli("tenant", "create", name, "--business-hours", "always", "--holidays", "none")
    stack.create_templates(name)
    stack.cli("instance", "create", "--tenant", name, *instance_args)
    return stack.create_key(name)


def _campaign(stack: Stack, key: str, external_id: str, phone_list: list[str]) -> dict:
    body = {"external_id": external_id, "contacts": [
        {"nome_cliente": f"Cliente {i}", "telefone": p, "valor": 100 + i, "data_vencimento": "2025-01-15"}
        for i, p in enumerate(phone_list)]}
    response = stack.post("send/overdue", body, key=key)
    assert response.status_code == 200, response.text
    return response.json()


def _moment(value) -> datetime:
    """A timestamp column as SQLite (text) or PostgreSQL (datetime) returns it."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def test_a_hanging_gateway_does_not_delay_another_tenants_send(deployment):
    stack = deployment
    processes, threads = SIZING[stack.kind]
    configured = os.environ.get("SEND_TENANT_CONCURRENCY", "").strip()
    bound = limit_for(configured=int(configured) if configured else None, threads=threads)
    most_in_flight = processes * (bound or threads)

    with FakeEvolution(api_key=EVOLUTION_KEY, instance=EVOLUTION_INSTANCE) as fake:
        fake.hang_next(10**6, seconds=HANG_SECONDS)  # every send goes out and is never answered
        hung_key = _tenant(stack, "hung", [
            "--provider", "evolution", "--name", EVOLUTION_INSTANCE, "--url", fake.url, "--token", EVOLUTION_KEY,
            "--min-interval", "0.05", "--max-interval", "0.06", "--messages-per-minute", "1000"])
        updated = stack.sql(
            "UPDATE instance SET options = %s WHERE name = %s AND tenant_id = (SELECT id FROM tenant WHERE name = %s) "
            "RETURNING id", (f'{{"typing_ms": 0, "timeout_seconds": {HUNG_TIMEOUT_SECONDS}}}', EVOLUTION_INSTANCE, "hung"))
        assert len(updated) == 1  # the CLI has no flag for options
        other_key = _tenant(stack, "other", ["--provider", "sandbox", "--name", "sandbox", "--messages-per-minute", "600"])

        # More of the hung tenant's sends than there are threads in all.
        _campaign(stack, hung_key, "hung-1", phones(processes * threads * 2 + 4))
        sends = lambda: len(fake.requests_to("/message/sendText"))  # noqa: E731 - all of them are still hanging
        wait_until(lambda: sends() >= most_in_flight, timeout=FILL_TIMEOUT, interval=0.1,
                   message=lambda: f"{sends()} of the hung tenant's sends reached its gateway\n{stack.logs()}")

        posted = time.monotonic()
        created = _campaign(stack, other_key, "other-1", phones(1, start=500))
        status = stack.wait_for(created["queue_id"], key=other_key, timeout=HUNG_TIMEOUT_SECONDS * 2)
        waited = time.monotonic() - posted
        in_flight = sends()
        ((created_at, sent_at),) = stack.sql(
            "SELECT contact.created_at, contact.sent_at FROM contact JOIN tenant ON contact.tenant_id = tenant.id "
            "WHERE tenant.name = 'other'")
        delay = (_moment(sent_at) - _moment(created_at)).total_seconds()
        print(f"\n[isolation, {stack.kind}: {processes} process(es) x {threads} threads, SEND_TENANT_CONCURRENCY="
              f"{configured or 'unset'}: {f'{bound} per process' if bound else 'no bound'}] tenant 'hung' has {in_flight} sends "
              f"hanging at its gateway; tenant 'other' sent {delay:.2f}s after its contact was created "
              f"({waited:.2f}s from its POST to seeing it completed)")
        assert status["contacts_sent"] == 1
        assert delay < MAX_OTHER_DELAY_SECONDS, f"tenant 'other' waited {delay:.1f}s behind the hung gateway"
        # The hung tenant holds what the bound allows, and never more.
        assert in_flight == most_in_flight, f"{in_flight} hung sends for a bound of {most_in_flight}"
        hung_sending = stack.sql("SELECT count(*) FROM contact JOIN tenant ON contact.tenant_id = tenant.id "
                                 "WHERE tenant.name = 'hung' AND contact.status = 'sending'")[0][0]
        assert hung_sending == most_in_flight
