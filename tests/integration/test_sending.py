"""Dispatch and send on real SQLite and PostgreSQL, without a broker: the
rules the actors run, called directly."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from billing import campaigns, dispatch, health, queues, recovery, sending
from billing.adapters.models import Contact, Event, Instance, Queue, SandboxMessage
from billing.adapters.providers import GatewayError, register, unregister
from billing.adapters.providers.base import NumberCheck
from billing.adapters.providers.registry import GatewayOptions, Provider
from billing.domain.states import ContactStatus, QueueStatus
from tests.factories import contact, make_tenant, phones

HORIZON = timedelta(seconds=60)


def _campaign(setup, count: int, external_id: str = "c1"):
    return campaigns.create_campaign(
        setup.tenant, template_type="overdue", request={"external_id": external_id, "contacts": [contact(p) for p in phones(count)]}
    )


def _drain(queue_id, *, now=None):
    """Run dispatch and every send it plans until nothing is left."""
    for _ in range(100):
        plan = dispatch.plan_dispatch(queue_id, horizon=HORIZON, batch_size=500, now=now)
        for contact_id, _ in plan.sends:
            sending.send_one(contact_id)
        if plan.next_dispatch_in is None:
            return
    raise AssertionError("dispatch never finished")


def test_dispatch_books_sends_and_completes(db):
    setup = make_tenant()
    created = _campaign(setup, 20)
    _drain(created.queue_id)
    queue = Queue.get_by_id(created.queue_id)
    assert queue.status == QueueStatus.COMPLETED and queue.completed_at is not None
    sent = list(SandboxMessage.select())
    assert len(sent) == 20 and len({m.contact_id for m in sent}) == 20
    assert {c.status for c in Contact.select()} == {ContactStatus.SENT}
    assert Event.select().where(Event.kind == "sent").count() == 20
    status = queues.queue_status(queue)
    assert status["contacts_sent"] == 20 and status["progress_percent"] == 100.0 and status["eta"] is None


def test_a_redelivered_send_does_nothing(db):
    setup = make_tenant()
    created = _campaign(setup, 1)
    plan = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10)
    (contact_id, _), = plan.sends
    assert sending.send_one(contact_id).outcome is sending.Outcome.SENT
    assert sending.send_one(contact_id).outcome is sending.Outcome.SKIPPED
    assert SandboxMessage.select().count() == 1
    assert Contact.get_by_id(contact_id).attempts == 1


def test_a_redelivered_dispatch_books_nothing_twice(db):
    setup = make_tenant()
    created = _campaign(setup, 5)
    first = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10)
    second = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10)
    assert len(first.sends) == 5 and second.sends == []


EXACT_SECOND = {"min_interval": 1, "max_interval": 1}  # no jitter: slots are predictable


def test_slots_follow_the_instance_pace(db):
    setup = make_tenant(messages_per_minute=60, pace=EXACT_SECOND)  # one a second
    created = _campaign(setup, 10)
    now = datetime(2030, 1, 1, 12, 0, 0)
    plan = dispatch.plan_dispatch(created.queue_id, horizon=timedelta(seconds=4.5), batch_size=100, now=now)
    assert [(slot - now).total_seconds() for _, slot in plan.sends] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert plan.next_dispatch_in == pytest.approx(2.0)  # 2 s before the last booked slot
    assert Instance.get_by_id(setup.instance.id).next_slot_at == now + timedelta(seconds=5)
    later = dispatch.plan_dispatch(created.queue_id, horizon=timedelta(seconds=4.5), batch_size=100, now=now + timedelta(seconds=2))
    # the next booking continues the pace where the previous one ended
    assert [(slot - now).total_seconds() for _, slot in later.sends] == [5.0, 6.0]


def test_two_queues_share_one_instance_pace(db):
    setup = make_tenant(messages_per_minute=60, pace=EXACT_SECOND)
    a, b = _campaign(setup, 3, "a"), _campaign(setup, 3, "b")
    now = datetime(2030, 1, 1, 12, 0, 0)
    plan_a = dispatch.plan_dispatch(a.queue_id, horizon=HORIZON, batch_size=100, now=now)
    plan_b = dispatch.plan_dispatch(b.queue_id, horizon=HORIZON, batch_size=100, now=now)
    assert [(s - now).total_seconds() for _, s in plan_a.sends] == [0.0, 1.0, 2.0]
    assert [(s - now).total_seconds() for _, s in plan_b.sends] == [3.0, 4.0, 5.0]


def test_pause_gives_booked_contacts_back_and_resume_sends_them(db):
    setup = make_tenant()
    created = _campaign(setup, 4)
    plan = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10)
    sending.send_one(plan.sends[0][0])
    queue = Queue.get_by_id(created.queue_id)
    assert queues.pause(queue, reason="ERP asked") is True
    assert queues.pause(queue) is False  # already paused: idempotent
    for contact_id, _ in plan.sends[1:]:
        assert sending.send_one(contact_id).outcome is sending.Outcome.SKIPPED
    assert SandboxMessage.select().count() == 1
    assert Contact.select().where(Contact.status == ContactStatus.PENDING).count() == 3
    status = queues.queue_status(Queue.get_by_id(created.queue_id))
    assert status["status"] == "paused" and status["pause_reason"] == "ERP asked" and status["status_display"] == "Pausado"
    assert queues.resume(queue) is True
    _drain(created.queue_id)
    assert SandboxMessage.select().count() == 4
    assert Queue.get_by_id(created.queue_id).status == QueueStatus.COMPLETED


def test_cancel_ends_every_unsent_contact(db):
    setup = make_tenant()
    created = _campaign(setup, 5)
    plan = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=2)
    sending.send_one(plan.sends[0][0])
    queue = Queue.get_by_id(created.queue_id)
    assert queues.cancel(queue) is True
    assert sending.send_one(plan.sends[1][0]).outcome is sending.Outcome.SKIPPED
    counts = queues.counts_by_status(queue.id)
    assert counts == {ContactStatus.SENT: 1, ContactStatus.CANCELLED: 4}
    assert dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends == []
    with pytest.raises(Exception, match="cancelled"):
        queues.resume(queue)


class _FailingGateway:
    """Fails with the error it is given, for the failure paths."""

    error: GatewayError

    def __init__(self, instance):
        pass

    def check_number(self, phone):
        return NumberCheck(exists=True, chat_id=f"{phone[1:]}@s.whatsapp.net")

    def send_text(self, **kwargs):
        raise type(self).error


@pytest.fixture
def failing_gateway():
    register(Provider(name="failing", label="Failing (test gateway)", adapter=_FailingGateway, options=GatewayOptions,
                      needs_url=False))
    yield _FailingGateway
    unregister("failing")


def test_permanent_error_fails_at_once(db, failing_gateway):
    setup = make_tenant()
    Instance.update(provider="failing").execute()
    failing_gateway.error = GatewayError("number is not on WhatsApp", transient=False)
    created = _campaign(setup, 1)
    (contact_id, _), = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends
    report = sending.send_one(contact_id)
    assert report.outcome is sending.Outcome.FAILED
    row = Contact.get_by_id(contact_id)
    assert row.status == ContactStatus.FAILED and row.reason == "number is not on WhatsApp" and row.attempts == 1
    assert Queue.get_by_id(created.queue_id).status == QueueStatus.COMPLETED


def test_transient_error_retries_until_attempts_run_out(db, failing_gateway):
    setup = make_tenant()
    Instance.update(provider="failing").execute()
    failing_gateway.error = GatewayError("gateway answered 503", transient=True)
    created = _campaign(setup, 1)
    (contact_id, _), = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends
    outcomes = [sending.send_one(contact_id).outcome for _ in range(setup.tenant.max_attempts)]
    assert outcomes == [sending.Outcome.RETRY] * (setup.tenant.max_attempts - 1) + [sending.Outcome.FAILED]
    row = Contact.get_by_id(contact_id)
    assert row.status == ContactStatus.FAILED and row.attempts == setup.tenant.max_attempts
    assert row.reason == "gateway answered 503"


def test_no_instance_turns_the_queue_instance_down_until_one_returns(db):
    setup = make_tenant()
    Instance.update(is_active=False).execute()
    created = _campaign(setup, 1)
    assert dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10).sends == []
    queue = Queue.get_by_id(created.queue_id)
    assert queue.status == QueueStatus.INSTANCE_DOWN and queue.pause_reason == health.INSTANCE_DOWN_REASON
    assert recovery.resume_due_pauses() == []  # still no instance
    Instance.update(is_active=True).execute()
    assert recovery.resume_due_pauses() == [created.queue_id]
    _drain(created.queue_id)
    assert Queue.get_by_id(created.queue_id).status == QueueStatus.COMPLETED


def test_recovery_releases_bookings_whose_message_was_lost(db):
    setup = make_tenant()
    created = _campaign(setup, 3)
    dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=10)
    # the broker lost the three messages; nothing happens until the grace passes
    assert recovery.release_lost_bookings() == 0
    assert recovery.release_lost_bookings(now=datetime.utcnow() + timedelta(minutes=10)) == 3
    assert recovery.queues_with_due_work() == [created.queue_id]
    _drain(created.queue_id)
    assert SandboxMessage.select().count() == 3
    assert recovery.queues_with_due_work() == []


def test_one_dispatch_chain_per_queue(db):
    setup = make_tenant(messages_per_minute=60, pace=EXACT_SECOND)
    created = _campaign(setup, 200)
    now = datetime(2030, 1, 1, 12, 0, 0)
    first = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=500, now=now)
    assert len(first.sends) == 61 and first.next_dispatch_in == pytest.approx(58.0)
    # an extra trigger while the chain is scheduled (recovery, a given-back contact) does nothing
    extra = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=500, now=now + timedelta(seconds=5))
    assert extra.sends == [] and extra.next_dispatch_in is None
    assert recovery.queues_with_due_work(now=now + timedelta(seconds=5)) == []  # the chain is alive
    # the chain's own message, on time, continues it
    second = dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=500, now=now + timedelta(seconds=58))
    assert len(second.sends) > 0 and second.next_dispatch_in is not None
    # the chain's next message is lost: recovery starts a new chain once it is overdue
    lost_at = now + timedelta(seconds=58 + second.next_dispatch_in)
    # (within seconds, not minutes: recovery.LOST_CHAIN_GRACE)
    assert recovery.queues_with_due_work(now=lost_at + timedelta(seconds=4)) == []
    assert recovery.queues_with_due_work(now=lost_at + timedelta(seconds=6)) == [created.queue_id]
    assert dispatch.plan_dispatch(created.queue_id, horizon=HORIZON, batch_size=500, now=lost_at + timedelta(seconds=6)).sends
