"""``billing.recovery.recover()`` run in the test process on real SQLite and
PostgreSQL: one pass does every step (lost bookings, dead claims, pauses whose
time is over, finished queues, old heartbeats, queues with due work, due
callbacks), and the claim of a worker killed mid-send is released once its
heartbeat goes stale, after which the contact is sent exactly once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from billing import callbacks, dispatch, health, recovery, sending, tenants, transitions, workers
from billing.adapters.models import Contact, Event, Heartbeat, Queue, SandboxMessage
from billing.clock import utcnow
from billing.domain.states import ContactStatus, QueueStatus
from tests.factories import make_tenant
from tests.inprocess_support import book, campaign

ROOT = Path(__file__).resolve().parents[2]

#: Seconds the killed worker's child process gets to claim its contact.
CHILD_TIMEOUT_SECONDS = 60

#: A worker process that registers, claims one contact the way send_one does,
#: says so, and then hangs until it is killed (it never sends).
CLAIMING_WORKER = """
import sys, time
from datetime import datetime
from billing.adapters.db import connect
from billing import sending, workers
from billing.clock import utcnow
connect(sys.argv[1])
worker = workers.register(kind="worker", info={"threads": 1})
claimed = sending.claim(int(sys.argv[2]), now=utcnow(), slot=datetime.fromisoformat(sys.argv[3]), worker=worker)
print(worker if claimed else "not claimed", flush=True)
time.sleep(600)
"""


def _status(contact_id: int) -> str:
    return Contact.get_by_id(contact_id).status


def test_one_pass_runs_every_step(db):
    now = utcnow()
    # Lost bookings: booked, never marked published (the dispatch died before publishing).
    lost = make_tenant("lost")
    lost_queue = campaign(lost, 2, external_id="lost").queue_id
    unpublished = [contact_id for contact_id, _ in book(lost_queue, now=now)]
    # A dead claim: its worker never beat (no heartbeat row).
    dead = make_tenant("dead")
    dead_queue = campaign(dead, 1, external_id="dead").queue_id
    (claimed, slot), = book(dead_queue, now=now)
    dispatch.mark_enqueued([claimed], now=now)
    assert sending.claim(claimed, now=now, slot=slot, worker="gone-host:99999:deadbeef")
    # A pause for business hours whose end has come.
    paused = make_tenant("paused")
    paused_queue = campaign(paused, 1, external_id="paused").queue_id
    transitions.move_queues(transitions.PAUSE_AUTOMATIC, Queue.id == paused_queue, now=now,
                            pause_kind=health.PAUSE_HOURS, pause_reason="fora do horário", resume_at=now)
    # A running queue whose contacts all ended without a send.
    finished = make_tenant("finished")
    finished_queue = campaign(finished, 2, external_id="finished").queue_id
    transitions.move_contacts(transitions.CANCEL, Contact.queue == finished_queue, now=now, reason="cancelled")
    # A process gone for days, and a callback due now.
    Heartbeat.create(id="old-host:1:00000000", kind="worker", hostname="old-host", pid=1,
                     started_at=now - timedelta(days=3), beat_at=now - timedelta(days=2), info={})
    due_callback = callbacks.emit(tenant_id=lost.tenant.id, campaign_id=None, url="https://erp.example.com/hook",
                                  event="contact.sent", data={"contact_id": 1}, now=now)

    found = recovery.recover(now=now + workers.DEAD_AFTER + recovery.UNPUBLISHED_GRACE)

    assert found.released_bookings == 2 and {_status(c) for c in unpublished} == {ContactStatus.PENDING}
    assert found.released_claims == 1 and _status(claimed) == ContactStatus.PENDING
    assert Event.select().where((Event.contact == claimed) & (Event.kind == "send_interrupted")).count() == 1
    assert Queue.get_by_id(paused_queue).status in QueueStatus.RUNNING
    assert Queue.get_by_id(finished_queue).status == QueueStatus.COMPLETED
    assert Heartbeat.get_or_none(Heartbeat.id == "old-host:1:00000000") is None
    # Every queue left with due contacts is handed to dispatch, once.
    assert sorted(found.queues) == sorted({str(lost_queue), str(dead_queue), str(paused_queue)})
    assert due_callback in found.callbacks and found.auto_replies == []

    # A second pass finds nothing new: the work was handed out.
    again = recovery.recover(now=now + workers.DEAD_AFTER + recovery.UNPUBLISHED_GRACE)
    assert (again.released_bookings, again.released_claims) == (0, 0)


def test_a_fresh_claim_of_a_live_worker_is_kept(db):
    setup = make_tenant()
    queue_id = campaign(setup, 1).queue_id
    (contact_id, slot), = book(queue_id)
    dispatch.mark_enqueued([contact_id])
    worker = workers.register(kind="worker", info={"threads": 1})
    assert sending.claim(contact_id, now=utcnow(), slot=slot, worker=worker)
    later = utcnow() + workers.DEAD_AFTER + timedelta(seconds=1)
    workers.beat(worker, now=later)  # it kept beating
    found = recovery.recover(now=later)
    assert found.released_claims == 0 and _status(contact_id) == ContactStatus.SENDING
    # Past the claim timeout even a live worker's claim is taken back.
    assert recovery.recover(now=utcnow() + recovery.DEFAULT_CLAIM_TIMEOUT + timedelta(seconds=1)).released_claims == 1
    workers.unregister(worker)


def test_the_claim_of_a_killed_worker_is_released_and_the_contact_sent_once(db):
    setup = make_tenant()
    queue_id = campaign(setup, 1).queue_id
    (contact_id, slot), = book(queue_id)
    dispatch.mark_enqueued([contact_id])
    child = subprocess.Popen(
        [sys.executable, "-c", CLAIMING_WORKER, db, str(contact_id), slot.isoformat()],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
    )
    try:
        worker = child.stdout.readline().strip()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=CHILD_TIMEOUT_SECONDS)
    assert child.returncode == -signal.SIGKILL
    row = Contact.get_by_id(contact_id)
    assert (row.status, row.claimed_by, row.attempts) == (ContactStatus.SENDING, worker, 1)

    # Just killed: its last beat is fresh, nobody can tell it is dead yet.
    assert recovery.recover().released_claims == 0 and _status(contact_id) == ContactStatus.SENDING
    # Its heartbeat goes stale: the claim is released and the queue dispatched again.
    stale = utcnow() + workers.DEAD_AFTER + timedelta(seconds=1)
    assert worker not in (workers.live_ids(now=stale) or [])
    found = recovery.recover(now=stale)
    assert found.released_claims == 1 and found.queues == [str(queue_id)]
    assert _status(contact_id) == ContactStatus.PENDING

    (rebooked, new_slot), = book(queue_id)
    assert rebooked == contact_id
    # The dead worker's message, redelivered by the broker, claims nothing...
    assert sending.send_one(contact_id, slot=slot).outcome is sending.Outcome.SKIPPED
    # ...the new booking's message sends it, and a redelivery of that does nothing.
    assert sending.send_one(contact_id, slot=new_slot).outcome is sending.Outcome.SENT
    assert sending.send_one(contact_id, slot=new_slot).outcome is sending.Outcome.SKIPPED
    assert SandboxMessage.select().where(SandboxMessage.contact_id == contact_id).count() == 1
    row = Contact.get_by_id(contact_id)
    assert row.status == ContactStatus.SENT and row.attempts == 2  # the interrupted attempt counts
    assert Queue.get_by_id(queue_id).status == QueueStatus.COMPLETED


def test_release_in_memory_work_gives_everything_back(db):
    setup = make_tenant()
    queue_id = campaign(setup, 3).queue_id
    booked = book(queue_id)
    contact_id, slot = booked[0]
    assert sending.claim(contact_id, now=utcnow(), slot=slot, worker="previous-run")
    released = recovery.release_in_memory_work()
    assert released == {"claims": 1, "bookings": 2, "chains": 0}
    assert {c.status for c in Contact.select()} == {ContactStatus.PENDING}
    assert recovery.queues_with_due_work() == [str(queue_id)]


def test_lost_bookings_and_lost_retries_age_out(db):
    setup = make_tenant()
    queue_id = campaign(setup, 2).queue_id
    now = utcnow()
    (published, _), (retrying, retry_slot) = book(queue_id, now=now)
    dispatch.mark_enqueued([published, retrying], now=now)
    # A published booking is kept until its slot is long past (the message may wait behind a backlog).
    assert recovery.release_lost_bookings(now=now + recovery.UNPUBLISHED_GRACE * 2) == 0
    # A transient failure leaves the contact queued without a slot for the broker's retry.
    assert sending.claim(retrying, now=now, slot=retry_slot, worker="w")
    transitions.move_contacts(transitions.RETRY_SOON, Contact.id == retrying, now=now, reason="503", enqueued_at=now)
    assert recovery.release_lost_bookings(now=now + recovery.LOST_MESSAGE_GRACE + timedelta(seconds=1)) == 1
    assert _status(published) == ContactStatus.PENDING and _status(retrying) == ContactStatus.QUEUED
    assert recovery.release_lost_bookings(now=now + recovery.LOST_RETRY_GRACE + timedelta(seconds=1)) == 1
    assert _status(retrying) == ContactStatus.PENDING


def test_an_instance_back_up_resumes_the_queues_waiting_for_it(db):
    setup = make_tenant()
    queue_id = campaign(setup, 1).queue_id
    health.record_state(setup.instance.id, health.DOWN, reason="closed")
    assert book(queue_id) == []  # no instance: dispatch parks the queue
    assert Queue.get_by_id(queue_id).status == QueueStatus.INSTANCE_DOWN
    assert recovery.resume_due_pauses() == []
    # Another instance is registered for the tenant (nothing resumed the queue on the way).
    tenants.create_instance(setup.tenant, name="second", provider="sandbox", messages_per_minute=60)
    assert Queue.get_by_id(queue_id).status == QueueStatus.INSTANCE_DOWN
    assert recovery.resume_due_pauses() == [str(queue_id)]
    assert Queue.get_by_id(queue_id).status in QueueStatus.RUNNING
