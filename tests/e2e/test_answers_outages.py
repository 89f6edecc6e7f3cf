"""The production web process (gunicorn) with its broker or its database
down: committed work is accepted with its ids and goes out when the broker
returns; a database that cannot answer is a 503 with Retry-After on every
route, and the process heals by itself when it is back.

The machine's PostgreSQL and RabbitMQ are never stopped: "RabbitMQ down" is
a BROKER_URL on a port nothing listens on; "PostgreSQL down" is a private
cluster (tests/faults/services.py) this test starts and stops itself.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess

import pytest
import requests

from billing.errors import DATABASE_RETRY_AFTER_SECONDS
from tests.conftest import postgres_database
from tests.e2e.stack import BIN, STARTUP_TIMEOUT, Stack, free_port, purge_rabbitmq, stop_group, wait_until

#: How long the campaign may take to go out once the broker is back: the
#: scheduler's recovery interval in these tests (2 s), a dispatch, 3 sends.
DELIVERY_TIMEOUT = 60

#: Long enough for a request to a process that has just lost its database.
REQUEST_TIMEOUT = 30

OPERATOR_TOKEN = "operator-token-for-tests"


@contextlib.contextmanager
def gunicorn(stack: Stack, *, name: str = "web"):
    """The Procfile's web process on ``stack``'s environment; yields its base URL."""
    port = free_port()
    log = open(stack.workdir / f"{name}.log", "w")
    process = subprocess.Popen(
        [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4", "web:create_app()"],
        env=stack.env, cwd=stack.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def alive() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{stack.log(name)}")
        try:
            return requests.get(f"{base}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(alive, timeout=STARTUP_TIMEOUT, message=lambda: f"gunicorn did not answer:\n{stack.log(name)}")
        yield base
    finally:
        stop_group(process)
        log.close()


def _contacts(count: int) -> list[dict]:
    return [{"nome_cliente": f"Cliente {i}", "telefone": f"+55119{10_000_000 + i:08d}", "valor": 100 + i,
             "data_vencimento": "2025-01-15"} for i in range(count)]


@pytest.mark.postgres  # its database; the rabbitmq_url fixture marks it rabbitmq
def test_a_send_while_rabbitmq_is_down_is_accepted_and_goes_out_when_it_returns(tmp_path, rabbitmq_url):
    with postgres_database() as database_url:
        closed_broker = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"  # nothing listens there
        down = Stack(kind="production", env={"DATABASE_URL": database_url, "BROKER_URL": closed_broker},
                     workdir=tmp_path)
        down.cli("db", "upgrade")
        key = down.create_tenant("acme", messages_per_minute=600)
        body = {"external_id": "fatura-outage", "contacts": _contacts(3)}
        headers = {"X-Billing-API-Key": key, "Idempotency-Key": "outage-1"}

        with gunicorn(down) as base:
            ready = requests.get(f"{base}/readyz", timeout=REQUEST_TIMEOUT)
            assert ready.status_code == 503 and ready.headers["Retry-After"], ready.text
            assert ready.json()["checks"] == {"database": "ok", "broker": "unreachable"}

            sent = requests.post(f"{base}/api/v1/billing/send/overdue", json=body, headers=headers, timeout=REQUEST_TIMEOUT)
            assert sent.status_code == 200, sent.text
            answer = sent.json()
            assert answer["success"] is True and answer["total_contacts"] == 3
            assert down.sql("SELECT external_id FROM campaign WHERE id = %s", (answer["billing_campaign_id"],)) == [
                ("fatura-outage",)]
            assert down.sql("SELECT count(*) FROM contact WHERE queue_id = %s AND status = 'pending'",
                            (answer["queue_id"],)) == [(3,)]

            # The client's retry, same key: the same answer, nothing created twice.
            again = requests.post(f"{base}/api/v1/billing/send/overdue", json=body, headers=headers, timeout=REQUEST_TIMEOUT)
            assert again.status_code == 200 and again.json() == answer
            assert again.headers["Idempotent-Replayed"] == "true"
            assert down.sql("SELECT count(*) FROM campaign") == [(1,)]

        web_log = down.log_lines("web")
        failed = [line for line in web_log if line.get("event", "").startswith("enqueue failed after commit")]
        assert [(line["level"], line["job"], line["queue_id"]) for line in failed] == [
            ("warning", "start_queue", answer["queue_id"])]
        assert not [line for line in web_log if line.get("level") in ("error", "critical")], down.log("web")
        assert "Traceback" not in (tmp_path / "web.log").read_text()

        # RabbitMQ is back: a worker and the scheduler on it find the campaign.
        back = Stack(kind="production", env={"DATABASE_URL": database_url, "BROKER_URL": rabbitmq_url},
                     workdir=tmp_path)
        purge_rabbitmq(rabbitmq_url)
        try:
            back.start_worker()
            back.start_scheduler()
            wait_until(
                lambda: back.sql("SELECT count(*) FROM contact WHERE queue_id = %s AND status IN ('sent', 'delivered', "
                                 "'read')", (answer["queue_id"],)) == [(3,)],
                timeout=DELIVERY_TIMEOUT, message=lambda: f"not sent after the broker returned\n{back.logs()}",
            )
            assert sorted(back.outbox_counts().values()) == [1, 1, 1]
        finally:
            back.stop()


def _unavailable(response: requests.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text[:300])
    assert response.headers["Retry-After"] == str(DATABASE_RETRY_AFTER_SECONDS)
    body = response.json()
    assert body["success"] is False and "database" in body["message"]


def _every_kind_of_route(base: str, key: str) -> list[requests.Response]:
    api = {"X-Billing-API-Key": key}
    admin = {"Authorization": f"Bearer {OPERATOR_TOKEN}", "X-Billing-Tenant": "acme"}
    return [
        requests.post(f"{base}/api/v1/billing/send/overdue", json={"external_id": "x", "contacts": _contacts(1)},
                      headers=api, timeout=REQUEST_TIMEOUT),
        requests.get(f"{base}/api/v1/billing/queue/00000000-0000-0000-0000-000000000000/status", headers=api,
                     timeout=REQUEST_TIMEOUT),
        requests.get(f"{base}/api/v1/admin/settings", headers=admin, timeout=REQUEST_TIMEOUT),
        requests.get(f"{base}/health", timeout=REQUEST_TIMEOUT),
    ]


def test_with_postgresql_stopped_every_route_is_503_and_heals_when_it_returns(tmp_path):
    from tests.faults.services import PrivatePostgres, make_base_dir

    base_dir = make_base_dir()  # the server runs as postgres: pytest's tmp dirs are private to root
    server = PrivatePostgres(base_dir).init()
    server.start()
    try:
        stack = Stack(kind="production", env={"DATABASE_URL": server.create_database(), "BROKER_URL": "",
                                              "BILLING_ADMIN_TOKEN": OPERATOR_TOKEN}, workdir=tmp_path)
        stack.cli("db", "upgrade")
        key = stack.create_tenant("acme", messages_per_minute=600)
        with gunicorn(stack) as base:
            # Up: every route answers, and the pool holds connections.
            assert [r.status_code for r in _every_kind_of_route(base, key)] == [200, 404, 200, 200]

            server.stop()
            for response in _every_kind_of_route(base, key):
                _unavailable(response)
            ready = requests.get(f"{base}/readyz", timeout=REQUEST_TIMEOUT)
            assert ready.status_code == 503 and ready.json()["checks"]["database"] == "unavailable"
            assert requests.get(f"{base}/healthz", timeout=REQUEST_TIMEOUT).status_code == 200

            server.start()
            healed = wait_until(lambda: requests.get(f"{base}/readyz", timeout=REQUEST_TIMEOUT).status_code == 200,
                                timeout=STARTUP_TIMEOUT, message="readyz did not recover")
            assert healed
            status = requests.post(f"{base}/api/v1/billing/send/overdue", headers={"X-Billing-API-Key": key},
                                   json={"external_id": "after", "contacts": _contacts(1)}, timeout=REQUEST_TIMEOUT)
            assert status.status_code == 200, status.text
        lines = [json.dumps(line) for line in stack.log_lines("web")]
        assert not [line for line in lines if '"level": "error"' in line], "\n".join(lines[-20:])
        assert "Traceback" not in (tmp_path / "web.log").read_text()
    finally:
        server.destroy()
        shutil.rmtree(base_dir, ignore_errors=True)


def test_a_database_that_is_not_there_is_503_from_the_first_request(tmp_path):
    """gunicorn starts (liveness answers) while DATABASE_URL points at a port
    nothing listens on; every route that needs the database says 503."""
    stack = Stack(kind="production", env={"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/billing",
                                          "BROKER_URL": "", "BILLING_ADMIN_TOKEN": OPERATOR_TOKEN}, workdir=tmp_path)
    with gunicorn(stack) as base:
        for response in _every_kind_of_route(base, "bk_aaaaaaaaaaaa_secret"):
            _unavailable(response)
    assert "Traceback" not in (tmp_path / "web.log").read_text()
