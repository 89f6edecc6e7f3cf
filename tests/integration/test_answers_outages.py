"""Answers that tell the truth when a dependency is down (in process, on real
SQLite and PostgreSQL): work that was committed is never an error because the
broker refused its wake-up, and a database that cannot answer is a 503 with
Retry-After on every route, never a 500. The same through real processes:
tests/e2e/test_answers_outages.py."""
from __future__ import annotations

import pytest
import structlog

from billing import recovery
from billing.adapters import db as billing_db
from billing.adapters import migrations
from billing.adapters.models import Campaign, Contact, Queue
from billing.config import Settings
from billing.errors import DATABASE_RETRY_AFTER_SECONDS
from tests.conftest import postgres_database
from tests.e2e.stack import free_port
from tests.factories import contact, make_tenant, phones
from web import create_app

SEND = "/api/v1/billing/send/overdue"


class BrokerDown:
    """The Jobs port of a process whose broker refuses every publish."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def _refuse(self, job: str) -> None:
        self.attempts.append(job)
        raise ConnectionError("[Errno 111] Connection refused")

    def start_queue(self, queue_id: str) -> None:
        self._refuse("start_queue")

    def callbacks(self, delivery_ids: list[str]) -> None:
        self._refuse("callbacks")

    def auto_replies(self, inbound_ids: list[int]) -> None:
        self._refuse("auto_replies")


@pytest.fixture
def broker_down(db):
    jobs = BrokerDown()
    client = create_app(Settings(database_url=db), jobs=jobs).test_client()
    client.jobs = jobs
    client.setup = make_tenant()
    client.headers = {"X-Billing-API-Key": client.setup.api_key}
    return client


def _body(external_id: str, count: int = 3) -> dict:
    return {"external_id": external_id, "contacts": [contact(p) for p in phones(count)]}


def test_a_send_the_broker_refuses_is_accepted_and_left_to_recovery(broker_down):
    headers = {**broker_down.headers, "Idempotency-Key": "send-1"}
    with structlog.testing.capture_logs() as logs:
        response = broker_down.post(SEND, json=_body("inv-1"), headers=headers)
    assert response.status_code == 200, response.json
    answer = response.json
    assert answer["success"] is True and answer["total_contacts"] == 3
    assert broker_down.jobs.attempts == ["start_queue"]  # it was tried, and refused

    # Committed: the campaign, its queue and contacts are in the database...
    campaign = Campaign.get_by_id(answer["billing_campaign_id"])
    assert campaign.external_id == "inv-1"
    queue = Queue.get_by_id(answer["queue_id"])
    assert queue.next_dispatch_at is None
    assert Contact.select().where(Contact.queue == queue.id).count() == 3
    # ...one warning says so, without a traceback...
    warnings = [line for line in logs if line["log_level"] == "warning"]
    assert [(w["job"], w["queue_id"]) for w in warnings] == [("start_queue", answer["queue_id"])]
    assert "Connection refused" in warnings[0]["error"] and "recovery" in warnings[0]["event"]
    assert not [line for line in logs if line["log_level"] in ("error", "critical")]
    # ...and the scheduler's recovery dispatches it once the broker is back.
    assert recovery.queues_with_due_work() == [answer["queue_id"]]

    # The client's retry with the same key gets the same answer, and nothing new.
    again = broker_down.post(SEND, json=_body("inv-1"), headers=headers)
    assert again.status_code == 200 and again.json == answer
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Campaign.select().count() == 1


def test_a_resume_the_broker_refuses_is_answered_and_left_to_recovery(broker_down):
    created = broker_down.post(SEND, json=_body("inv-2", count=2), headers=broker_down.headers).json
    queue_id = created["queue_id"]
    url = f"/api/v1/billing/queue/{queue_id}/control"
    assert broker_down.post(url, json={"action": "pause"}, headers=broker_down.headers).json["status"] == "paused"
    assert recovery.queues_with_due_work() == []  # paused: nothing to dispatch

    resumed = broker_down.post(url, json={"action": "resume"}, headers=broker_down.headers)
    assert resumed.status_code == 200 and resumed.json["changed"] is True, resumed.json
    assert broker_down.jobs.attempts == ["start_queue", "start_queue"]
    assert recovery.queues_with_due_work() == [queue_id]


# --- the database down ---------------------------------------------------------

def _routes(setup_key: str, admin_token: str) -> list[tuple[str, str, dict]]:
    """One route of each kind: the ERP API (GET and POST), the admin API, a webhook."""
    api = {"X-Billing-API-Key": setup_key}
    admin = {"Authorization": f"Bearer {admin_token}", "X-Billing-Tenant": "acme"}
    return [
        ("post", SEND, {"headers": api, "json": _body("down-1")}),
        ("get", "/api/v1/billing/queue/00000000-0000-0000-0000-000000000000/status", {"headers": api}),
        ("get", "/api/v1/admin/settings", {"headers": admin}),
        ("get", "/api/v1/admin/campaigns", {"headers": admin}),
        ("post", "/webhooks/waha/1", {"json": {"event": "message.ack"}}),
        ("get", "/health", {}),
    ]


def _assert_unavailable(response, *, fragment: str) -> None:
    assert response.status_code == 503, (response.status_code, response.data[:300])
    assert response.is_json and response.json["success"] is False
    assert fragment in response.json["message"], response.json
    assert response.headers["Retry-After"] == str(DATABASE_RETRY_AFTER_SECONDS)
    assert "Traceback" not in response.get_data(as_text=True)


def _bind_unusable_database(kind: str, tmp_path) -> str:
    """PostgreSQL: a port nothing listens on. SQLite, which has no server: a
    file that cannot be opened (its directory is a plain file)."""
    if kind == "postgres":
        url = f"postgresql://postgres@127.0.0.1:{free_port()}/billing"
        billing_db.connect(url)
        return url
    (tmp_path / "not-a-directory").write_text("")
    path = tmp_path / "not-a-directory" / "billing.sqlite3"
    billing_db.database.initialize(billing_db.peewee.SqliteDatabase(str(path)))
    return f"sqlite:///{path}"


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_an_unreachable_database_is_503_with_retry_after_on_every_route(kind, tmp_path, request):
    url = _bind_unusable_database(kind, tmp_path)
    request.addfinalizer(billing_db.database.close)
    app = create_app(Settings(database_url=url, admin_token="operator-token"), jobs=BrokerDown())
    client = app.test_client()
    with structlog.testing.capture_logs() as logs:
        for method, path, kwargs in _routes("bk_aaaaaaaaaaaa_secret", "operator-token"):
            _assert_unavailable(getattr(client, method)(path, **kwargs), fragment="database")
    assert not [line for line in logs if line["log_level"] in ("error", "critical")]
    # The operator's log line says which database and why; the caller is told neither.
    details = {line["error"] for line in logs if line["event"] == "service unavailable"}
    assert details and all(url.split("@")[-1] in detail for detail in details), details

    # Readiness names what is down; liveness touches no database.
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.headers["Retry-After"] == str(DATABASE_RETRY_AFTER_SECONDS)
    assert ready.json["checks"] == {"database": "unavailable", "broker": "ok"}
    assert ready.json["message"] == "not ready: database unavailable"
    alive = client.get("/healthz")
    assert alive.status_code == 200 and alive.json == {"status": "ok"}


def test_a_database_that_went_away_mid_request_is_503_and_the_record_is_not_kept(db, monkeypatch):
    """The database answers authentication, then fails inside the view (a
    restart): 503, and the Idempotency-Key is free for the retry."""
    setup = make_tenant()
    client = create_app(Settings(database_url=db), jobs=BrokerDown()).test_client()
    from peewee import OperationalError

    from billing import campaigns

    def lost(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(campaigns, "create_campaign", lost)
    headers = {"X-Billing-API-Key": setup.api_key, "Idempotency-Key": "mid-1"}
    _assert_unavailable(client.post(SEND, json=_body("mid-1"), headers=headers), fragment="database is unavailable")
    monkeypatch.undo()
    retried = client.post(SEND, json=_body("mid-1"), headers=headers)
    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_schema_not_upgraded_is_503_naming_the_command(kind, tmp_path, request):
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/empty.sqlite3"
        billing_db.connect(url)
        request.addfinalizer(billing_db.database.close)
        _check_schema_answers(url)
        return
    with postgres_database() as url:
        billing_db.connect(url)
        try:
            _check_schema_answers(url)
        finally:
            billing_db.database.close_all()


def _check_schema_answers(url: str) -> None:
    client = create_app(Settings(database_url=url, admin_token="operator-token"), jobs=BrokerDown()).test_client()
    for method, path, kwargs in _routes("bk_aaaaaaaaaaaa_secret", "operator-token"):
        _assert_unavailable(getattr(client, method)(path, **kwargs), fragment="run `billing db upgrade`")
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["checks"]["database"] == "schema not upgraded"

    # Half upgraded (an older version) is not upgraded either.
    migrations.upgrade()
    migrations.SchemaMigration.delete().where(migrations.SchemaMigration.version == migrations.MIGRATIONS[-1].version).execute()
    _assert_unavailable(client.get("/health"), fragment="run `billing db upgrade`")
    migrations.upgrade()
    assert client.get("/health").status_code == 200
    assert client.get("/readyz").json == {"success": True, "status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_readiness_names_an_unreachable_broker(db):
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    client = create_app(Settings(database_url=db, broker_url=closed), jobs=BrokerDown()).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.headers["Retry-After"]
    assert ready.json["checks"] == {"database": "ok", "broker": "unreachable"}
    assert client.get("/health").status_code == 200  # the database alone: kept as it was


def test_readiness_of_a_reachable_broker(db, rabbitmq_url):
    client = create_app(Settings(database_url=db, broker_url=rabbitmq_url), jobs=BrokerDown()).test_client()
    assert client.get("/readyz").json["checks"] == {"database": "ok", "broker": "ok"}
