"""The per-tenant bound on real SQLite and PostgreSQL, in this process: a send
over its tenant's bound claims nothing, writes nothing and comes back later
(its booking token kept, its delay growing), while another tenant's send goes;
the actors re-publish refused sends and auto-replies and skip refused health
checks; a worker applies SEND_TENANT_CONCURRENCY at boot and refuses a value
that lets one tenant take every thread, as ``billing worker`` does in one line;
and the admin API refuses instance options that would make each send wait
long (``typing_ms`` over 15 s, ``timeout_seconds`` over 120 s: 422; the CLI
has no flag for options).
The end-to-end proof, with a hanging gateway and real worker processes, is
tests/e2e/test_tenant_isolation.py."""
from __future__ import annotations

import dramatiq
import pytest
from dramatiq.common import dq_name

import tasks
from billing import dispatch, fairness, sending
from billing.adapters.models import CallbackDelivery, Contact, Event, Heartbeat, InboundMessage, Instance, SandboxMessage
from billing.adapters.providers.http import MAX_TIMEOUT_SECONDS, MAX_TYPING_MS
from billing.config import Settings
from billing.domain.states import ContactStatus
from tasks import actors
from tasks.wiring import TenantBoundMisconfigured
from tests.factories import admin_client, make_tenant
from tests.inprocess_support import DISPATCH_HORIZON, Cli, campaign, one_error_line


@pytest.fixture(autouse=True)
def fresh_bounds(monkeypatch):
    """This process's bounds without the history of earlier tests (tenant ids
    repeat across databases, and a tenant's history decides whether it waits)."""
    for name in ("sends", "health_checks", "callbacks"):
        monkeypatch.setattr(fairness, name, fairness.TenantSlots(limit=fairness.DEFAULT_TENANT_CONCURRENCY))


@pytest.fixture
def stub(db):
    """The embedded wiring (StubBroker) on the test database."""
    wiring = tasks.setup(settings=Settings(database_url=db), configure_logging=False)
    yield wiring
    wiring.broker.flush_all()


def _booked(setup, *, external_id: str) -> tuple[int, object]:
    """One contact of a new campaign of ``setup``'s tenant, booked as dispatch books it."""
    queue_id = campaign(setup, 1, external_id=external_id).queue_id
    (booking,) = dispatch.plan_dispatch(queue_id, horizon=DISPATCH_HORIZON, batch_size=10).sends
    return booking


def _delayed(broker, queue: str) -> list[dramatiq.Message]:
    return [dramatiq.Message.decode(raw) for raw in list(broker.queues[dq_name(queue)].queue)]


def test_a_send_over_its_tenants_bound_writes_nothing_and_another_tenant_sends(db):
    hung, other = make_tenant("hung"), make_tenant("other")
    contact_id, slot = _booked(hung, external_id="a")
    other_id, other_slot = _booked(other, external_id="b")
    slots = fairness.TenantSlots(limit=1)
    assert slots.try_acquire(hung.tenant.id)  # the tenant's one send in flight (its gateway hangs)
    before = Contact.get_by_id(contact_id)

    refused = sending.send_one(contact_id, slot=slot, slots=slots)
    assert refused.outcome is sending.Outcome.BUSY and refused.slot == slot and refused.refusals == 1
    assert refused.queue_id == str(before.queue_id)
    low, high = 1 - fairness.BUSY_JITTER, 1 + fairness.BUSY_JITTER
    assert fairness.BUSY_FIRST_DELAY_SECONDS * low <= refused.delay <= fairness.BUSY_FIRST_DELAY_SECONDS * high
    again = sending.send_one(contact_id, slot=slot, slots=slots, refusals=refused.refusals)
    assert again.outcome is sending.Outcome.BUSY and again.refusals == 2 and again.delay >= 2 * low
    after = Contact.get_by_id(contact_id)
    assert (after.status, after.attempts, after.slot_at, after.claimed_by, after.updated_at) == (
        ContactStatus.QUEUED, 0, slot, before.claimed_by, before.updated_at)
    assert not Event.select().where(Event.contact == contact_id).exists()

    # Another tenant is not held by it, and counts against its own bound only.
    assert sending.send_one(other_id, slot=other_slot, slots=slots).outcome is sending.Outcome.SENT
    assert slots.running(other.tenant.id) == 0 and slots.running(hung.tenant.id) == 1

    # A stale message of the refused tenant (an older booking) ends, rather than coming back.
    stale = slot.replace(year=slot.year - 1)
    assert sending.send_one(contact_id, slot=stale, slots=slots).outcome is sending.Outcome.SKIPPED
    assert sending.send_one(10_000_000, slots=slots).outcome is sending.Outcome.SKIPPED  # no such contact

    # Once the hung send ends, the message that came back goes, once.
    slots.release(hung.tenant.id)
    assert sending.send_one(contact_id, slot=slot, slots=slots).outcome is sending.Outcome.SENT
    assert slots.running(hung.tenant.id) == 0
    assert SandboxMessage.select().where(SandboxMessage.contact_id == contact_id).count() == 1


def test_the_bound_is_given_back_when_a_send_breaks(db, monkeypatch):
    setup = make_tenant()
    contact_id, slot = _booked(setup, external_id="a")
    slots = fairness.TenantSlots(limit=1)
    monkeypatch.setattr(sending, "_send_claimed", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        sending.send_one(contact_id, slot=slot, slots=slots)
    assert slots.running(setup.tenant.id) == 0
    assert Contact.get_by_id(contact_id).status == ContactStatus.PENDING  # its claim given back too


def test_the_actor_publishes_a_refused_send_again_with_its_refusals(stub):
    setup = make_tenant()
    contact_id, slot = _booked(setup, external_id="a")
    assert fairness.sends.try_acquire(setup.tenant.id) and fairness.sends.try_acquire(setup.tenant.id)
    try:
        actors.send_contact.fn(contact_id, slot.isoformat(), 2)
    finally:
        fairness.sends.release(setup.tenant.id)
        fairness.sends.release(setup.tenant.id)
    (message,) = _delayed(stub.broker, actors.SEND_QUEUE)
    assert list(message.args) == [contact_id, slot.isoformat(), 3]
    assert 4 * (1 - fairness.BUSY_JITTER) * 1000 <= message.options["eta"] - message.message_timestamp
    assert Contact.get_by_id(contact_id).status == ContactStatus.QUEUED
    actors.send_contact.fn(*message.args)  # the bound is free again: it goes
    assert Contact.get_by_id(contact_id).status == ContactStatus.SENT


def test_a_refused_auto_reply_comes_back_and_a_refused_health_check_is_skipped(stub):
    setup = make_tenant()
    inbound = InboundMessage.create(tenant=setup.tenant, instance=setup.instance, provider_message_id="m1",
                                    phone="+5511987654321", text="pix?")
    checked = Instance.get_by_id(setup.instance.id).health_checked_at
    for bound in (fairness.sends, fairness.health_checks):
        assert bound.try_acquire(setup.tenant.id) and bound.try_acquire(setup.tenant.id)
    try:
        actors.auto_reply.fn(inbound.id)
        actors.check_instance.fn(setup.instance.id)
    finally:
        for bound in (fairness.sends, fairness.health_checks):
            bound.release(setup.tenant.id)
            bound.release(setup.tenant.id)
    (message,) = _delayed(stub.broker, actors.SEND_QUEUE)
    assert message.actor_name == "auto_reply" and list(message.args) == [inbound.id, 1]
    assert Instance.get_by_id(setup.instance.id).health_checked_at == checked  # the gateway was not asked
    actors.check_instance.fn(setup.instance.id)  # with room, it is
    assert Instance.get_by_id(setup.instance.id).health_checked_at != checked


def test_a_refused_callback_delivery_is_not_attempted_and_comes_back(stub):
    setup = make_tenant()
    delivery = CallbackDelivery.create(id="msg_bound", tenant=setup.tenant, url="http://127.0.0.1:9/hook",
                                       event="contact.sent", payload={"x": 1})
    assert fairness.callbacks.try_acquire(setup.tenant.id) and fairness.callbacks.try_acquire(setup.tenant.id)
    try:
        actors.deliver_callback.fn(delivery.id, 1)
    finally:
        fairness.callbacks.release(setup.tenant.id)
        fairness.callbacks.release(setup.tenant.id)
    (message,) = _delayed(stub.broker, actors.CALLBACKS_QUEUE)
    assert message.actor_name == "deliver_callback" and list(message.args) == [delivery.id, 2]
    assert 2 * (1 - fairness.BUSY_JITTER) * 1000 <= message.options["eta"] - message.message_timestamp
    assert CallbackDelivery.get_by_id(delivery.id).attempts == 0  # not attempted, nothing claimed


def test_a_worker_applies_the_bound_at_boot_and_refuses_one_that_takes_every_thread(db):
    wiring = tasks.setup(settings=Settings(database_url=db), configure_logging=False)
    worker = dramatiq.Worker(wiring.broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        assert fairness.sends.limit == fairness.health_checks.limit == 1  # the default, below 2 threads
    finally:
        worker.stop(timeout=10_000)
    assert fairness.sends.limit == fairness.DEFAULT_TENANT_CONCURRENCY

    wiring = tasks.setup(settings=Settings(database_url=db, send_tenant_concurrency=2), configure_logging=False)
    refused = dramatiq.Worker(wiring.broker, worker_threads=2, worker_timeout=100)
    with pytest.raises(TenantBoundMisconfigured, match=r"SEND_TENANT_CONCURRENCY \(2\) must be below the worker's threads \(2\)"):
        refused.start()
    # Refused before the process registered: no live worker row to hold claims.
    assert not Heartbeat.select().where(Heartbeat.stopped_at.is_null()).exists()
    refused.stop(timeout=1_000)
    tasks.setup(settings=Settings(database_url=db), configure_logging=False)


def test_billing_worker_refuses_a_bound_that_takes_every_thread_in_one_line(db, monkeypatch):
    cli = Cli(db, monkeypatch)
    result = cli("worker", "--processes", "1", "--threads", "4", ok=False, env={"SEND_TENANT_CONCURRENCY": "4"})
    assert one_error_line(result) == (
        "Error: SEND_TENANT_CONCURRENCY (4) must be below the worker's threads (4), so that one tenant's gateway "
        "cannot hold them all; 0 turns the bound off")
    negative = cli("worker", "--threads", "4", ok=False, env={"SEND_TENANT_CONCURRENCY": "-2"})
    assert one_error_line(negative) == "Error: SEND_TENANT_CONCURRENCY must be 0 (no bound) or more, got -2"


@pytest.mark.parametrize("provider", ["evolution", "waha"])
def test_instance_options_that_would_hold_a_thread_for_long_are_refused(db, provider):
    """A tenant admin cannot make each send wait longer than the option bounds
    (the bound above caps how many such sends run; these cap how long each does)."""
    admin = admin_client(db, operator_token="op-" + "f" * 40)
    base = {"name": "slow", "provider": provider, "url": "http://127.0.0.1:9", "token": "t"}
    too_long = [{"typing_ms": 1e12}, {"typing_ms": 60_000}, {"typing_ms": MAX_TYPING_MS + 1},
                {"timeout_seconds": 1e9}, {"timeout_seconds": MAX_TIMEOUT_SECONDS + 1}]
    for options in too_long:
        refused = admin.post("/api/v1/admin/instances", headers=admin.auth, json={**base, "options": options})
        assert refused.status_code == 422, (options, refused.json)
        assert refused.json["errors"][0]["field"] == f"options.{next(iter(options))}", refused.json
    assert not Instance.select().where(Instance.name == "slow").exists()

    made = admin.post("/api/v1/admin/instances", headers=admin.auth,
                      json={**base, "options": {"typing_ms": MAX_TYPING_MS, "timeout_seconds": MAX_TIMEOUT_SECONDS}})
    assert made.status_code == 201, made.json
    for options in too_long:
        patched = admin.patch(f"/api/v1/admin/instances/{made.json['id']}", headers=admin.auth, json={"options": options})
        assert patched.status_code == 422, (options, patched.json)
    assert Instance.get_by_id(made.json["id"]).options == {"typing_ms": MAX_TYPING_MS, "timeout_seconds": MAX_TIMEOUT_SECONDS}
