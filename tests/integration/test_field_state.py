"""State that stays true in the field (issue: caps count sends, one transition
table, claims that name their worker, bookings that say they were published,
retries counted as retries, records that survive a database outage).

Run on real SQLite and PostgreSQL (the ``db`` fixture), calling the rules the
actors run, with the clock passed in where time matters.
"""
from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from peewee import OperationalError

from billing import campaigns, dispatch, pacing, queues, recovery, sending, transitions, workers
from billing.adapters.models import Contact, Event, Heartbeat, Instance, Queue, SandboxMessage
from billing.adapters.providers import GatewayError
from billing.clock import utcnow
from billing.domain.states import ContactStatus, QueueStatus
from tests.factories import contact, make_tenant, phones

HORIZON = timedelta(seconds=60)
ROOT = Path(__file__).resolve().parents[2]


def _campaign(setup, count: int, external_id: str = "c1", template_type: str = "notification"):
    return campaigns.create_campaign(
        setup.tenant, template_type=template_type,
        request={"external_id": external_id, "contacts": [contact(p, mensagem="Aviso") for p in phones(count)]},
    )


def _status(contact_id) -> str:
    return Contact.get_by_id(contact_id).status


# --- 4. daily caps count sends, not bookings --------------------------------------------------------------


def test_cancel_gives_booked_slots_back_to_the_daily_cap(db):
    setup = make_tenant(pace={"daily_cap": 10})
    first = _campaign(setup, 20, "first")
    plan = dispatch.plan_dispatch(first.queue_id, horizon=HORIZON, batch_size=500)
    assert len(plan.sends) == 10  # the cap
    for contact_id, _ in plan.sends[:3]:
        assert sending.send_one(contact_id).outcome is sending.Outcome.SENT
    queues.cancel(Queue.get_by_id(first.queue_id))

    instance = Instance.get_by_id(setup.instance.id)
    assert instance.day_count == 3  # the 7 booked, unsent slots came back
    assert pacing.sent_today(instance, now=utcnow()) == 3

    second = _campaign(setup, 5, "second")
    plan = dispatch.plan_dispatch(second.queue_id, horizon=HORIZON, batch_size=500)
    assert len(plan.sends) == 5
    assert Queue.get_by_id(second.queue_id).status == QueueStatus.PROCESSING  # not paused for the cap
    for contact_id, _ in plan.sends:
        sending.send_one(contact_id)
    assert pacing.sent_today(Instance.get_by_id(setup.instance.id), now=utcnow()) == 8


def test_pause_gives_booked_slots_back_and_failures_do_not_count(db, monkeypatch):
    setup = make_tenant(pace={"daily_cap": 10})
    created = _campaign(setup, 10)
    plan = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=500)
    assert Instance.get_by_id(setup.instance.id).day_count == 10
    # one permanent failure: its slot was not used by an accepted message
    from billing.adapters.providers.sandbox import SandboxGateway

    def refuse(self, **kwargs):
        raise GatewayError("rejected", transient=False)

    monkeypatch.setattr(SandboxGateway, "send_text", refuse)
    assert sending.send_one(plan.sends[0][0]).outcome is sending.Outcome.FAILED
    queues.pause(Queue.get_by_id(created.queue_id))
    instance = Instance.get_by_id(setup.instance.id)
    assert instance.day_count == 0
    assert pacing.sent_today(instance, now=utcnow()) == 0
    # the paused queue's bookings went back to pending at once
    assert {c.status for c in Contact.select().where(Contact.id != plan.sends[0][0])} == {ContactStatus.PENDING}


# --- 5. states change in one place -------------------------------------------------------------------


#: The only modules allowed to write a contact's or a queue's status.
STATUS_WRITERS = {"billing/transitions.py", "billing/campaigns.py"}  # campaigns: the initial insert


def test_no_status_is_written_outside_the_transition_table():
    offenders = []
    pattern = re.compile(r"(Contact|Queue)\.update\([^)]*\bstatus\s*=", re.S)
    for path in sorted((ROOT / "billing").rglob("*.py")) + sorted((ROOT / "tasks").rglob("*.py")) + sorted(
        (ROOT / "web").rglob("*.py")
    ):
        relative = path.relative_to(ROOT).as_posix()
        if relative in STATUS_WRITERS:
            continue
        if pattern.search(path.read_text()):
            offenders.append(relative)
    assert offenders == []


def test_every_transition_lands_in_a_known_state():
    for transition in transitions.CONTACT_TRANSITIONS:
        assert transition.target in ContactStatus.ALL and set(transition.sources) <= set(ContactStatus.ALL)
        if transition.final:
            assert transition.target not in ContactStatus.OPEN
    for transition in transitions.QUEUE_TRANSITIONS:
        assert transition.target in QueueStatus.ALL and set(transition.sources) <= set(QueueStatus.ALL)


def test_a_transition_that_lost_its_race_does_nothing(db):
    setup = make_tenant()
    created = _campaign(setup, 1)
    (contact_id, _), = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends
    now = utcnow()
    assert transitions.move_contacts(transitions.CLAIM, Contact.id == contact_id, now=now)
    before = Event.select().count()
    assert not transitions.move_contacts(transitions.UNBOOK, Contact.id == contact_id, now=now)  # not queued any more
    assert Event.select().count() == before and _status(contact_id) == ContactStatus.SENDING


# --- 11. lost work is found in seconds, and the pause/resume race ----------------------------------------


def test_a_claim_of_a_dead_worker_is_released_in_seconds_and_a_live_ones_is_kept(db):
    setup = make_tenant()
    created = _campaign(setup, 2)
    (a, _), (b, _) = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends
    now = utcnow()
    Heartbeat.create(id="host:1:dead", kind="worker", beat_at=now - timedelta(seconds=60), started_at=now)
    Heartbeat.create(id="host:2:live", kind="worker", beat_at=now, started_at=now)
    earlier = now - workers.DEAD_AFTER - timedelta(seconds=1)
    assert sending.claim(a, now=earlier, worker="host:1:dead")
    assert sending.claim(b, now=earlier, worker="host:2:live")
    if workers.live_ids(now=now) is None:
        pytest.skip("the database server started less than DEAD_AFTER ago")  # pragma: no cover
    assert recovery.release_dead_claims(now=now) == 1
    assert _status(a) == ContactStatus.PENDING and _status(b) == ContactStatus.SENDING
    assert Event.select().where((Event.contact == a) & (Event.kind == "send_interrupted")).count() == 1


def test_a_clean_stop_releases_its_claims_at_once(db):
    setup = make_tenant()
    created = _campaign(setup, 1)
    (a, _), = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends
    now = utcnow()
    process = workers.register(kind="worker", now=now)
    assert sending.claim(a, now=now - workers.DEAD_AFTER - timedelta(seconds=1), worker=process)
    assert recovery.release_dead_claims(now=now) == 0  # alive
    workers.unregister(process, now=now)
    assert recovery.release_dead_claims(now=now) == 1


def test_a_booking_never_published_is_given_back_within_seconds(db):
    setup = make_tenant()
    created = _campaign(setup, 3)
    plan = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10)
    published = [plan.sends[0][0]]
    dispatch.mark_enqueued(published)  # the broker died before the other two were published
    later = utcnow() + recovery.UNPUBLISHED_GRACE + timedelta(seconds=1)
    assert recovery.release_lost_bookings(now=later) == 2
    assert _status(published[0]) == ContactStatus.QUEUED
    assert {_status(c) for c, _ in plan.sends[1:]} == {ContactStatus.PENDING}
    # and recovery dispatches the queue again, without waiting for the chain to look lost
    Queue.update(next_dispatch_at=None).where(Queue.id == created.queue_id).execute()
    assert recovery.queues_with_due_work(now=later) == [created.queue_id]


def test_a_send_that_finds_its_queue_paused_gives_the_contact_back(db):
    setup = make_tenant()
    created = _campaign(setup, 1)
    (a, slot), = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends
    # dispatch committed a booking just after the pause moved the queue's bookings back
    Queue.update(status=QueueStatus.PAUSED, pause_kind="manual").where(Queue.id == created.queue_id).execute()
    assert not sending.claim(a, now=utcnow(), slot=slot)
    assert _status(a) == ContactStatus.PENDING  # not left queued with its message consumed


def test_a_stale_message_of_an_older_booking_claims_nothing(db):
    setup = make_tenant()
    created = _campaign(setup, 1)
    (a, old_slot), = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends
    queues.pause(Queue.get_by_id(created.queue_id))
    queues.resume(Queue.get_by_id(created.queue_id))
    (again, new_slot), = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends
    assert again == a and new_slot != old_slot
    assert sending.send_one(a, slot=old_slot).outcome is sending.Outcome.SKIPPED
    assert _status(a) == ContactStatus.QUEUED
    assert sending.send_one(a, slot=new_slot).outcome is sending.Outcome.SENT


def test_the_status_names_stalled_contacts(db):
    setup = make_tenant()
    created = _campaign(setup, 2)
    plan = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10)
    later = utcnow() + queues.STALL_AFTER + timedelta(seconds=5)
    assert queues.stalled_contacts(created.queue_id, now=later) == 2
    status = queues.queue_status(Queue.get_by_id(created.queue_id))
    assert status["contacts_stalled"] == 0  # not yet late now
    for contact_id, _ in plan.sends:
        sending.send_one(contact_id)
    assert queues.stalled_contacts(created.queue_id, now=later) == 0


# --- 14. contacts_pending_retry counts retries ---------------------------------------------------------------


def test_pending_retry_counts_retries_not_first_attempts(db, monkeypatch):
    setup = make_tenant()
    created = _campaign(setup, 3)
    plan = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10)
    (a, _), (b, _), _ = plan.sends
    assert sending.claim(a, now=utcnow())  # a first attempt in flight
    status = queues.queue_status(Queue.get_by_id(created.queue_id))
    assert status["contacts_pending_retry"] == 0

    from billing.adapters.providers.sandbox import SandboxGateway

    def flaky(self, **kwargs):
        raise GatewayError("gateway 503", transient=True)

    monkeypatch.setattr(SandboxGateway, "send_text", flaky)
    assert sending.send_one(b).outcome is sending.Outcome.RETRY
    status = queues.queue_status(Queue.get_by_id(created.queue_id))
    assert status["contacts_pending_retry"] == 1


# --- 10. the gateway's acceptance survives a database outage ---------------------------------------------


def test_a_record_is_retried_across_a_database_outage_never_the_send(db, monkeypatch):
    setup = make_tenant()
    created = _campaign(setup, 1)
    (a, _), = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends
    real_move = transitions.move_contacts
    outage = {"left": 3}

    def flaky_move(transition, *args, **kwargs):
        if transition is transitions.SEND_ACCEPTED and outage["left"]:
            outage["left"] -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return real_move(transition, *args, **kwargs)

    monkeypatch.setattr(transitions, "move_contacts", flaky_move)
    monkeypatch.setattr(sending, "RECORD_BACKOFF_SECONDS", (0.01,))
    assert sending.send_one(a).outcome is sending.Outcome.SENT
    assert outage["left"] == 0
    assert SandboxMessage.select().count() == 1  # sent once
    row = Contact.get_by_id(a)
    assert row.status == ContactStatus.SENT and row.provider_message_id


def test_a_late_record_wins_over_the_resend_of_a_released_claim(db, monkeypatch):
    """The claim was released (the worker looked dead during the outage)
    before the record landed: the record still marks the contact sent, so the
    released contact is not sent a second time."""
    setup = make_tenant()
    created = _campaign(setup, 1)
    (a, _), = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends
    real_move = transitions.move_contacts
    state = {"released": False}

    def release_then_record(transition, where, **kwargs):
        if transition is transitions.SEND_ACCEPTED and not state["released"]:
            state["released"] = True
            recovery.release_stuck_claims(now=utcnow() + timedelta(hours=1))
            raise OperationalError("terminating connection due to administrator command")
        return real_move(transition, where, **kwargs)

    monkeypatch.setattr(transitions, "move_contacts", release_then_record)
    monkeypatch.setattr(sending, "RECORD_BACKOFF_SECONDS", (0.01,))
    assert sending.send_one(a).outcome is sending.Outcome.SENT
    assert _status(a) == ContactStatus.SENT
    assert dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends == []
    assert SandboxMessage.select().count() == 1


# --- 6. a restarted embedded process resumes at once ----------------------------------------------------------


def test_start_up_restarts_the_dispatch_chains_of_the_previous_process(db):
    setup = make_tenant()
    created = _campaign(setup, 5)
    now = utcnow()
    dispatch.plan_dispatch(created.queue_id, horizon=timedelta(seconds=1), batch_size=1, now=now)
    assert Queue.get_by_id(created.queue_id).next_dispatch_at is not None
    # the process stopped: its in-memory broker lost the chain's message
    assert recovery.queues_with_due_work(now=now) == []  # the chain looks alive...
    released = recovery.release_in_memory_work(now=now)
    assert released == {"claims": 0, "bookings": 1, "chains": 1}
    assert recovery.queues_with_due_work(now=now) == [created.queue_id]  # ...until start-up forgets it


def test_a_resumed_queue_books_from_now_not_after_the_slots_its_pause_gave_back(db):
    setup = make_tenant(messages_per_minute=30)  # a slot every 1.5-2.5 s
    created = _campaign(setup, 20)
    now = utcnow()
    plan = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=500, now=now)
    assert max(slot for _, slot in plan.sends) > now + timedelta(seconds=20)
    queues.pause(Queue.get_by_id(created.queue_id))
    queues.resume(Queue.get_by_id(created.queue_id))
    later = now + timedelta(seconds=1)
    again = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=500, now=later)
    assert min(slot for _, slot in again.sends) <= later + timedelta(seconds=1)


# --- 13. a send whose answer never came is checked before it is sent again -----------------------------------


@pytest.mark.parametrize("store", [True, False], ids=["gateway-can-tell", "gateway-cannot-tell"])
def test_an_unanswered_send_is_checked_with_the_gateway_before_a_resend(db, store):
    from billing import tenants
    from tests.fakes.evolution import FakeEvolution

    with FakeEvolution(api_key="k") as fake:
        fake.keep_messages(store)
        setup = make_tenant()
        Instance.update(is_active=False).execute()
        tenants.create_instance(setup.tenant, name="billing", provider="evolution", url=fake.url, token="k",
                                options={"typing_ms": 0, "typing": False, "timeout_seconds": 0.5},
                                min_interval=0.01, max_interval=0.01)
        created = _campaign(setup, 1)
        (a, _), = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends
        fake.hang_next(1, seconds=5)
        report = sending.send_one(a)
        assert report.outcome is sending.Outcome.RETRY
        row = Contact.get_by_id(a)
        assert row.outcome_unknown and row.status == ContactStatus.QUEUED
        assert len(fake.messages) == 1  # it did go out

        assert sending.send_one(a).outcome is sending.Outcome.SENT  # the broker's retry
        kinds = [e.kind for e in Event.select().where(Event.contact == a).order_by(Event.id)]
        row = Contact.get_by_id(a)
        assert row.status == ContactStatus.SENT and not row.outcome_unknown
        if store:
            assert len(fake.messages) == 1  # found at the gateway: recorded, not sent again
            assert sending.EVENT_CONFIRMED in kinds
            assert row.provider_message_id == fake.messages[0].id
        else:
            assert len(fake.messages) == 2  # the gateway could not tell: sent again, and the history says so
            decision = Event.get((Event.contact == a) & (Event.kind == sending.EVENT_RESEND_CHECKED)).detail
            assert decision["decision"] == "unchecked"


# --- 15/8. an auto-reply whose enqueue was lost is answered by recovery -------------------------------------


def test_recovery_answers_a_question_whose_auto_reply_was_never_enqueued(db, monkeypatch):
    from billing import inbound, tenants
    from billing.adapters.models import InboundMessage
    from billing.domain import replies

    setup = make_tenant()
    tenants.update_tenant(setup.tenant, auto_reply=True)
    created = campaigns.create_campaign(setup.tenant, template_type="notification", request={
        "external_id": "pix", "contacts": [contact(phones(1)[0], mensagem="Aviso", codigo_pix="000201PIX")]})
    (a, _), = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends
    sending.send_one(a)
    now = utcnow()
    question = InboundMessage.create(
        tenant=setup.tenant.id, instance=setup.instance.id, provider_message_id="in-1", phone=phones(1)[0],
        text="qual o pix?", intent=replies.QUESTION, contact=a, received_at=now - timedelta(minutes=2))
    found = recovery.recover(now=now)
    assert found.auto_replies == [question.id]
    assert inbound.send_auto_reply(question.id)
    assert recovery.recover(now=now).auto_replies == []  # answered: not again

    # a permanent failure keeps its claim: recovery does not retry it every pass
    second = InboundMessage.create(
        tenant=setup.tenant.id, instance=setup.instance.id, provider_message_id="in-2", phone=phones(1)[0],
        text="manda o pix de novo", intent=replies.QUESTION, contact=a, received_at=now - timedelta(minutes=2))
    from billing.adapters.providers.sandbox import SandboxGateway

    def refuse(self, **kwargs):
        raise GatewayError("blocked by WhatsApp", transient=False)

    monkeypatch.setattr(SandboxGateway, "send_text", refuse)
    with pytest.raises(GatewayError):
        inbound.send_auto_reply(second.id)
    assert recovery.recover(now=now).auto_replies == []


def test_the_admin_api_shows_accepted_sends_as_sent_today(db):
    from billing import admin

    setup = make_tenant(pace={"daily_cap": 50})
    created = _campaign(setup, 20)
    plan = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=500)
    for contact_id, _ in plan.sends[:4]:
        sending.send_one(contact_id)
    view = admin.instance_view(Instance.get_by_id(setup.instance.id))
    assert view["sent_today"] == 4  # not the 20 booked


def test_a_send_broken_after_its_claim_gives_the_claim_back(db, monkeypatch):
    """The database went away between the claim and the send: the message's
    retry must not find the contact "sending" (held by a live worker) and
    skip it; the claim goes back now, or at the next beat when the database
    cannot take it now."""
    setup = make_tenant()
    created = _campaign(setup, 2)
    (a, _), (b, _) = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends

    def down(contact_id):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(sending, "_load", down)
    with pytest.raises(OperationalError):
        sending.send_one(a)
    row = Contact.get_by_id(a)
    assert row.status == ContactStatus.PENDING and row.attempts == 0

    # the give-back fails too: it is remembered and done at the next beat
    monkeypatch.setattr(sending, "_release_claim", lambda contact_id: False)
    with pytest.raises(OperationalError):
        sending.send_one(b)
    assert _status(b) == ContactStatus.SENDING
    workers.beat(workers.register(kind="worker"))
    assert _status(b) == ContactStatus.PENDING


def test_concurrent_failures_of_one_tenant_do_not_deadlock(db, monkeypatch):
    """Two sends of one tenant failing at the same moment: each transaction
    key-shares the tenant (foreign-key checks of its contact's updates) and
    then locks it to give its slot back; with FOR UPDATE that deadlocked, and
    every retry deadlocked again. The barrier makes both reach the lock together."""
    import threading

    from billing.adapters import db as billing_db

    setup = make_tenant()
    created = _campaign(setup, 2)
    (a, _), (b, _) = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends
    for contact_id in (a, b):
        assert sending.claim(contact_id, now=utcnow())
    # (SQLite serializes writers: there the second waits for the first, and
    # the barrier only times out.)
    barrier = threading.Barrier(2, timeout=10 if billing_db.is_postgres() else 0.2)
    real_release = pacing.release_slots

    def release_together(slots):
        try:
            barrier.wait()
        except threading.BrokenBarrierError:  # pragma: no cover - the other thread failed first
            pass
        return real_release(slots)

    monkeypatch.setattr(pacing, "release_slots", release_together)
    errors = []

    def fail(contact_id):
        try:
            with billing_db.write_transaction():
                transitions.move_contacts(transitions.RETRY_SOON, Contact.id == contact_id, now=utcnow(),
                                          reason="gateway 500")
        except Exception as exc:  # the assertion below names it
            errors.append(repr(exc))
        finally:
            billing_db.database.close()

    threads = [threading.Thread(target=fail, args=(c,)) for c in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert {_status(a), _status(b)} == {ContactStatus.QUEUED}
