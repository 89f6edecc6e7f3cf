"""Callbacks to a real local receiver: Standard Webhooks signatures, retries
with the same webhook-id, Retry-After, 410, and the SSRF guard."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from billing import callbacks, campaigns, clock
from billing.adapters.models import CallbackAttempt, CallbackDelivery, DisabledEndpoint
from billing.domain import signing
from billing.errors import InvalidRequest
from tests.factories import contact, make_tenant


class FlakyReceiver:
    """Answers the given statuses in turn (then 200), recording each request."""

    def __init__(self, *answers: tuple[int, dict]) -> None:
        self.answers = list(answers)
        self.received: list[tuple[dict, bytes]] = []
        self.server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/billing"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _wsgi(self, environ, start_response):
        request = Request(environ)
        self.received.append(({k.lower(): v for k, v in request.headers.items()}, request.get_data()))
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        return Response("{}", status=status, headers=headers, content_type="application/json")(environ, start_response)

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver_factory():
    made = []

    def make(*answers):
        made.append(FlakyReceiver(*answers))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def _delivery(setup, url) -> str:
    created = campaigns.create_campaign(
        setup.tenant, template_type="overdue", request={"external_id": "cb", "callback_url": url, "contacts": [contact()]},
    )
    return callbacks.emit(tenant_id=setup.tenant.id, campaign_id=created.campaign_id, url=url, event="contact.sent",
                          data={"contact_id": 1})


def test_fourth_try_arrives_with_the_same_id_and_a_valid_signature(db, receiver_factory):
    setup = make_tenant(allow_private_callbacks=True)
    receiver = receiver_factory((500, {}), (503, {}), (502, {}))
    delivery_id = _delivery(setup, receiver.url)
    now = datetime(2030, 1, 1, 12, 0)
    for _attempt, expected_wait in enumerate(callbacks.RETRY_SCHEDULE[:3]):
        with clock.frozen(lambda: now):
            report = callbacks.deliver(delivery_id, now=now)
        assert report.status == callbacks.PENDING
        row = CallbackDelivery.get_by_id(delivery_id)
        assert row.next_attempt_at == now + expected_wait and row.last_status_code in (500, 503, 502)
        # not due before its time
        assert callbacks.deliver(delivery_id, now=now + expected_wait / 2).status == callbacks.PENDING
        now += expected_wait
    assert callbacks.deliver(delivery_id, now=now).status == callbacks.DELIVERED
    assert len(receiver.received) == 4
    ids = {headers["webhook-id"] for headers, _ in receiver.received}
    assert ids == {delivery_id}
    headers, body = receiver.received[-1]
    signing.verify(secret=setup.tenant.callback_secret, headers=headers, body=body)  # raises if invalid
    assert json.loads(body)["type"] == "contact.sent" and json.loads(body)["id"] == delivery_id
    with pytest.raises(signing.InvalidSignature):
        signing.verify(secret=signing.generate_secret(), headers=headers, body=body)
    assert [a.status_code for a in CallbackAttempt.select().order_by(CallbackAttempt.id)] == [500, 503, 502, 200]


def test_retry_after_is_honoured(db, receiver_factory):
    setup = make_tenant(allow_private_callbacks=True)
    receiver = receiver_factory((429, {"Retry-After": "3600"}))
    delivery_id = _delivery(setup, receiver.url)
    now = datetime(2030, 1, 1, 12, 0)
    report = callbacks.deliver(delivery_id, now=now)
    assert report.retry_in is None  # an hour: the scheduler hands it out, not the broker
    assert CallbackDelivery.get_by_id(delivery_id).next_attempt_at == now + timedelta(hours=1)
    assert callbacks.due(now=now + timedelta(minutes=59)) == []
    assert callbacks.due(now=now + timedelta(hours=1)) == [delivery_id]


def test_410_disables_the_endpoint(db, receiver_factory):
    setup = make_tenant(allow_private_callbacks=True)
    receiver = receiver_factory((410, {}))
    first = _delivery(setup, receiver.url)
    assert callbacks.deliver(first).status == callbacks.DISABLED
    second = callbacks.emit(tenant_id=setup.tenant.id, campaign_id=None, url=receiver.url, event="contact.read", data={})
    assert callbacks.deliver(second).status == callbacks.DISABLED
    assert len(receiver.received) == 1 and DisabledEndpoint.select().count() == 1


def test_attempts_end_after_the_schedule(db, receiver_factory):
    setup = make_tenant(allow_private_callbacks=True)
    receiver = receiver_factory(*[(500, {})] * 20)
    delivery_id = _delivery(setup, receiver.url)
    now = datetime(2030, 1, 1)
    for _ in range(len(callbacks.RETRY_SCHEDULE) + 1):
        callbacks.deliver(delivery_id, now=now)
        now += timedelta(days=1)
    row = CallbackDelivery.get_by_id(delivery_id)
    assert (row.status, row.attempts, row.last_error) == (callbacks.FAILED, len(callbacks.RETRY_SCHEDULE) + 1, "HTTP 500")


@pytest.mark.parametrize("url", ["http://127.0.0.1/x", "http://localhost:8000/x", "http://10.0.0.5/x",
                                 "http://192.168.1.10/x", "http://169.254.169.254/latest", "http://[::1]/x"])
def test_private_callback_urls_are_refused_unless_allowed(db, url):
    setup = make_tenant()
    with pytest.raises(InvalidRequest, match="non-public address"):
        campaigns.create_campaign(setup.tenant, template_type="overdue",
                                  request={"external_id": "s", "callback_url": url, "contacts": [contact()]})
    allowed = make_tenant("allowed", allow_private_callbacks=True)
    campaigns.create_campaign(allowed.tenant, template_type="overdue",
                              request={"external_id": "s", "callback_url": url, "contacts": [contact()]})


def test_the_guard_also_runs_before_each_delivery(db, receiver_factory):
    setup = make_tenant(allow_private_callbacks=True)
    receiver = receiver_factory()
    delivery_id = _delivery(setup, receiver.url)
    setup.tenant.allow_private_callbacks = False
    setup.tenant.save()
    assert callbacks.deliver(delivery_id).status == callbacks.FAILED
    assert receiver.received == []
    assert "non-public" in CallbackDelivery.get_by_id(delivery_id).last_error
