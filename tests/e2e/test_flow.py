"""The whole flow over HTTP on each stack: an ERP posts, WhatsApp (the
sandbox outbox) receives each valid contact exactly once."""
from __future__ import annotations

import itertools
import time

from tests.factories import phones
from tests.waiting import stays, wait_until

_tenants = itertools.count()

#: How long a paused or cancelled queue is watched sending nothing: 30 sends
#: at the tests' 600 a minute, so a queue still going would show.
STILL_SECONDS = 3.0

#: How long a send already claimed by a worker may take to finish.
CLAIMED_SEND_TIMEOUT = 10


def _contacts(valid: int, *, start: int = 0) -> list[dict]:
    return [
        {"nome_cliente": f"Cliente {i}", "telefone": p, "valor": 100 + i, "data_vencimento": "2025-01-15"}
        for i, p in enumerate(phones(valid, start=start))
    ]


def test_a_thousand_contacts_each_sent_exactly_once(stack):
    key = stack.create_tenant(f"big{next(_tenants)}", messages_per_minute=60_000)
    valid = _contacts(950)
    invalid = [{"nome": f"X{i}", "telefone": bad} for i, bad in enumerate(["123", "+55 20 98765-4321", "abc"] * 10)]
    duplicates = [dict(c, nome_cliente="dup") for c in valid[:20]]
    body = {"external_id": "lote-1000", "contacts": valid + invalid + duplicates}

    response = stack.post("send/overdue", body, key=key)
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["total_contacts"] == 950 and created["rejected_contacts"] == 50

    status = stack.wait_for(created["queue_id"], key=key)
    assert status["contacts_sent"] == 950 and status["progress_percent"] == 100.0 and status["contacts_failed"] == 0

    listing = stack.get(f"campaign/{created['billing_campaign_id']}/contacts?page_size=1000", key=key).json()
    sent_ids = {c["id"] for c in listing["results"] if c["status"] == "sent"}
    rejected = [c for c in listing["results"] if c["status"] == "rejected"]
    assert len(sent_ids) == 950 and len(rejected) == 50
    assert all(c["reason"] for c in rejected)
    assert sum("duplicate phone" in c["reason"] for c in rejected) == 20

    counts = stack.outbox_counts()
    assert {cid: n for cid, n in counts.items() if cid in sent_ids} == dict.fromkeys(sent_ids, 1)

    again = stack.post("send/overdue", body, key=key)
    assert again.status_code == 409
    assert again.json()["queue_id"] == created["queue_id"]
    assert again.json()["billing_campaign_id"] == created["billing_campaign_id"]


def _sent(stack, queue_id, key) -> int:
    return stack.status(queue_id, key=key)["contacts_sent"]


def _nothing_in_flight(stack, tenant: str) -> bool:
    """No contact of ``tenant`` is claimed by a worker and not yet sent or failed."""
    rows = stack.sql("SELECT count(*) FROM contact JOIN tenant ON contact.tenant_id = tenant.id "
                     "WHERE tenant.name = %s AND contact.status = 'sending'", (tenant,))
    return rows[0][0] == 0


def test_pause_stops_sending_resume_continues(stack):
    tenant = f"pause{next(_tenants)}"
    key = stack.create_tenant(tenant, messages_per_minute=600)  # 10 a second
    created = stack.post("send/overdue", {"external_id": "p1", "contacts": _contacts(60)}, key=key).json()
    queue_id = created["queue_id"]
    wait_until(lambda: _sent(stack, queue_id, key) >= 5, timeout=30, interval=0.1, message="5 sends")
    paused = stack.post(f"queue/{queue_id}/control", {"action": "pause"}, key=key).json()
    assert paused["status"] == "paused"
    # A send already claimed by a worker may still finish.
    wait_until(lambda: _nothing_in_flight(stack, tenant), timeout=CLAIMED_SEND_TIMEOUT, message="a send still in flight")
    settled = _sent(stack, queue_id, key)
    stays(lambda: _sent(stack, queue_id, key) == settled, seconds=STILL_SECONDS,
          message=lambda: f"a paused queue went on sending: {stack.status(queue_id, key=key)}")
    assert settled < 60
    assert stack.status(queue_id, key=key)["status"] == "paused"

    resumed = stack.post(f"queue/{queue_id}/control", {"action": "resume"}, key=key).json()
    assert resumed["status"] == "processing"
    status = stack.wait_for(queue_id, key=key, timeout=60)
    assert status["contacts_sent"] == 60
    listing = stack.get(f"campaign/{created['billing_campaign_id']}/contacts?page_size=100", key=key).json()
    ids = {c["id"] for c in listing["results"]}
    counts = stack.outbox_counts()
    assert [counts[i] for i in ids] == [1] * 60


def test_cancel_ends_the_queue(stack):
    tenant = f"cancel{next(_tenants)}"
    key = stack.create_tenant(tenant, messages_per_minute=600)
    created = stack.post("send/overdue", {"external_id": "c1", "contacts": _contacts(60)}, key=key).json()
    queue_id = created["queue_id"]
    wait_until(lambda: _sent(stack, queue_id, key) >= 3, timeout=30, interval=0.1, message="3 sends")
    cancelled = stack.post(f"queue/{queue_id}/control", {"action": "cancel"}, key=key).json()
    assert cancelled["status"] == "cancelled"
    wait_until(lambda: _nothing_in_flight(stack, tenant), timeout=CLAIMED_SEND_TIMEOUT, message="a send still in flight")
    settled = stack.status(queue_id, key=key)
    stays(lambda: _sent(stack, queue_id, key) == settled["contacts_sent"], seconds=STILL_SECONDS,
          message=lambda: f"a cancelled queue went on sending: {stack.status(queue_id, key=key)}")
    final = stack.status(queue_id, key=key)
    assert final["contacts_sent"] == settled["contacts_sent"] < 60
    assert final["contacts_sent"] + final["contacts_cancelled"] == 60
    assert final["status"] == "cancelled" and final["contacts_pending"] == 0


def test_request_id_and_tenant_reach_the_actors_logs(stack):
    key = stack.create_tenant(f"logs{next(_tenants)}", messages_per_minute=60_000)
    request_id = f"e2e-{stack.kind}-{time.monotonic_ns()}"
    created = stack.post("send/overdue", {"external_id": "log-1", "contacts": _contacts(2)}, key=key,
                         headers={"X-Request-ID": request_id}).json()
    stack.wait_for(created["queue_id"], key=key)

    def send_lines() -> list[dict]:
        return [line for line in stack.worker_log_lines() if line.get("request_id") == request_id and line.get("event") == "send"]

    # The log lines reach the file a moment after the sends are recorded.
    wait_until(lambda: len(send_lines()) >= 2, timeout=10, message=lambda: f"{len(send_lines())} send lines\n{stack.logs()}")
    sends = send_lines()
    assert len(sends) == 2
    assert {line["queue_id"] for line in sends} == {created["queue_id"]}
    assert all(line["tenant"].startswith("logs") and line["actor"] == "send_contact" for line in sends)
