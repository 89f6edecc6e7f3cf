"""An Idempotency-Key whose first request died mid-flight (its record left
unanswered) is usable again after IN_FLIGHT_TIMEOUT; within it, a retry is a
409. Time is controlled with billing.clock.frozen, on real SQLite and
PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from billing import clock
from billing.adapters.models import Campaign, IdempotencyRecord
from billing.config import Settings
from tests.factories import RecordedJobs, contact, make_tenant, phones
from web import create_app, idempotency

SEND = "/api/v1/billing/send/overdue"
#: When the first request started (and died).
STARTED = datetime(2030, 1, 1, 12, 0, 0)


@pytest.fixture
def api(db):
    client = create_app(Settings(database_url=db), jobs=RecordedJobs()).test_client()
    client.setup = make_tenant()
    client.headers = {"X-Billing-API-Key": client.setup.api_key, "Idempotency-Key": "k-1"}
    return client


def _body(external_id: str = "inv-1") -> dict:
    return {"external_id": external_id, "contacts": [contact(p) for p in phones(2)]}


def _died_mid_flight(api, body: dict) -> None:
    """What a first request leaves when its process is killed after claiming
    the key: the record, unanswered. Made by a real request whose answer is
    then erased, so the fingerprint is the real one."""
    with clock.frozen(lambda: STARTED):
        assert api.post(SEND, json=body, headers=api.headers).status_code == 200
    IdempotencyRecord.update(status_code=None, response_body="").execute()
    Campaign.delete().execute()  # it died before its commit


def _post_at(api, at: datetime, body: dict, headers: dict | None = None):
    with clock.frozen(lambda: at):
        return api.post(SEND, json=body, headers=headers or api.headers)


def test_a_request_still_in_flight_gets_409(api):
    _died_mid_flight(api, _body())
    for seconds in (0, 30, idempotency.IN_FLIGHT_TIMEOUT.total_seconds() - 1):
        response = _post_at(api, STARTED + timedelta(seconds=seconds), _body())
        assert response.status_code == 409, response.json
        assert "still being processed" in response.json["message"]
    assert Campaign.select().count() == 0


def test_the_key_is_usable_again_after_the_request_timeout(api):
    _died_mid_flight(api, _body())
    later = STARTED + idempotency.IN_FLIGHT_TIMEOUT + timedelta(seconds=1)
    retried = _post_at(api, later, _body())
    assert retried.status_code == 200, retried.json
    assert "Idempotent-Replayed" not in retried.headers
    assert Campaign.select().count() == 1
    # From then on it is an ordinary key: the answer replays.
    replay = _post_at(api, later + timedelta(hours=1), _body())
    assert replay.status_code == 200 and replay.json == retried.json
    assert replay.headers["Idempotent-Replayed"] == "true"
    record = IdempotencyRecord.get()
    assert record.status_code == 200 and record.created_at == later


def test_a_first_request_that_died_after_its_commit_answers_with_the_existing_ids(api):
    """The retry runs again and finds its external_id taken: 409 with the
    campaign's ids, so the caller learns what was created and nothing is sent
    twice."""
    with clock.frozen(lambda: STARTED):
        first = api.post(SEND, json=_body(), headers=api.headers).json
    IdempotencyRecord.update(status_code=None, response_body="").execute()
    retried = _post_at(api, STARTED + idempotency.IN_FLIGHT_TIMEOUT + timedelta(seconds=1), _body())
    assert retried.status_code == 409
    assert (retried.json["billing_campaign_id"], retried.json["queue_id"]) == (first["billing_campaign_id"], first["queue_id"])
    assert Campaign.select().count() == 1


def test_another_request_with_a_dead_key_is_still_422(api):
    _died_mid_flight(api, _body())
    other = _post_at(api, STARTED + idempotency.IN_FLIGHT_TIMEOUT * 2, _body("inv-other"))
    assert other.status_code == 422 and "different request" in other.json["message"]


def test_two_retries_racing_after_the_timeout_run_once(api):
    """Both take over in turn: the first gets the key, the second sees it in
    flight again (its own record, just made)."""
    _died_mid_flight(api, _body())
    later = STARTED + idempotency.IN_FLIGHT_TIMEOUT + timedelta(seconds=5)
    IdempotencyRecord.update(created_at=later).execute()  # the first retry just claimed it
    response = _post_at(api, later + timedelta(seconds=1), _body())
    assert response.status_code == 409
    assert Campaign.select().count() == 0


def test_an_answer_that_cannot_be_recorded_still_answers(api, monkeypatch):
    """The database fails only when the answer is recorded: the committed
    campaign is still answered 200, and the key frees itself later."""
    from peewee import OperationalError

    real_update = IdempotencyRecord.update

    def failing_update(*args, **kwargs):
        if "status_code" in kwargs:
            raise OperationalError("server closed the connection unexpectedly")
        return real_update(*args, **kwargs)

    monkeypatch.setattr(IdempotencyRecord, "update", failing_update)
    response = _post_at(api, STARTED, _body())
    assert response.status_code == 200 and response.json["billing_campaign_id"]
    monkeypatch.undo()
    assert IdempotencyRecord.get().status_code is None
    again = _post_at(api, STARTED + idempotency.IN_FLIGHT_TIMEOUT + timedelta(seconds=1), _body())
    assert again.status_code == 409 and again.json["queue_id"] == response.json["queue_id"]
