"""The actors run inside the test process: a real ``dramatiq.Worker`` (two
threads) on the broker ``tasks.setup()`` builds, the embedded StubBroker on
SQLite and PostgreSQL and a real RabbitMQ; the actors' functions called
directly for their branches (send_contact's RetryLater and
DatabaseUnavailable, the re-enqueue of a floor wait and of a rebooked retry);
the middleware's heartbeat thread and log context; and the broker's shared
reconnect backoff.

Paces are realistic (20-40 messages a minute, gaps of 1.5-3 s): the tests
measure the gaps between sends, with a tolerance."""
from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import dramatiq
import pytest
import structlog
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name

import tasks
from billing import sending, tenants, workers
from billing.adapters import db as billing_db
from billing.adapters.models import Contact, Event, Heartbeat, Instance, Queue, SandboxMessage
from billing.config import Settings
from billing.domain.states import ContactStatus, QueueStatus
from tasks import actors, middleware
from tasks import broker as task_broker
from tests.conftest import _fresh_postgres
from tests.e2e.stack import free_port, purge_rabbitmq, release_broker, wait_for_idle_broker
from tests.factories import make_tenant
from tests.fakes.evolution import FakeEvolution
from tests.inprocess_support import book, campaign
from tests.waiting import wait_until

#: Worker threads of the in-process worker.
WORKER_THREADS = 2
#: How often (ms) the worker releases due delayed messages (billing worker's default).
WORKER_TIMEOUT_MS = 100
#: Measured gaps may fall short of the pace by clock granularity, and run over by scheduling.
EARLY_TOLERANCE_SECONDS = 0.05
LATE_TOLERANCE_SECONDS = 1.0
#: Quick send retries for the tests (production: 5 s to 5 min).
FAST_RETRY = {"send_retry_min_backoff_ms": 200, "send_retry_max_backoff_ms": 400}
#: No database listens here.
DEAD_DATABASE_URL = "postgresql://postgres@127.0.0.1:1/postgres"


def _exact_pace(seconds: float) -> dict:
    """A pace of exactly one message every ``seconds`` (no jitter)."""
    return {"min_interval": seconds, "max_interval": seconds}


def _wire(database_url: str, broker_url: str = "", **settings) -> tasks.Wiring:
    return tasks.setup(settings=Settings(database_url=database_url, broker_url=broker_url, **settings),
                       configure_logging=False)


@pytest.fixture
def stub(db):
    """The embedded wiring (StubBroker) on the test database."""
    wiring = _wire(db, **FAST_RETRY)
    yield wiring
    wiring.broker.flush_all()


@pytest.fixture
def rabbit(postgres_database_url, rabbitmq_url):
    """The production wiring: RabbitMQ, on PostgreSQL, with this run's turn on
    the vhost and its queues emptied before and after."""

    _fresh_postgres(postgres_database_url)
    wait_for_idle_broker(rabbitmq_url)
    purge_rabbitmq(rabbitmq_url)
    wiring = _wire(postgres_database_url, rabbitmq_url, **FAST_RETRY)
    try:
        yield wiring
    finally:
        purge_rabbitmq(rabbitmq_url)
        release_broker(rabbitmq_url)
        _wire(postgres_database_url)  # closes the RabbitMQ broker


class _Running:
    """A dramatiq.Worker running in this process until the block ends."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.worker = dramatiq.Worker(broker, worker_threads=WORKER_THREADS, worker_timeout=WORKER_TIMEOUT_MS)

    def __enter__(self) -> dramatiq.Worker:
        self.worker.start()
        return self.worker

    def __exit__(self, *exc_info) -> None:
        self.worker.stop(timeout=10_000)


def _sent_times(queue_id) -> list:
    return [c.sent_at for c in Contact.select().where(Contact.queue == queue_id).order_by(Contact.sent_at)]


def _gaps(times) -> list[float]:
    return [(b - a).total_seconds() for a, b in zip(times, times[1:])]


def _all_sent(queue_id) -> bool:
    return Queue.get_by_id(queue_id).status == QueueStatus.COMPLETED


def _delayed(broker: StubBroker, queue: str) -> list[dramatiq.Message]:
    return [dramatiq.Message.decode(raw) for raw in list(broker.queues[dq_name(queue)].queue)]


# --- a worker in this process ---------------------------------------------------------------------


def _campaign_goes_out_at_its_pace(wiring: tasks.Wiring, *, seconds: float, count: int) -> None:
    setup = make_tenant(pace=_exact_pace(seconds))
    queue_id = campaign(setup, count).queue_id
    with _Running(wiring.broker):
        process = wait_until(lambda: Heartbeat.get_or_none(Heartbeat.id == workers.current_id()), timeout=5,
                             message="the worker registered no heartbeat")
        assert process.kind == "worker" and process.info["threads"] == WORKER_THREADS
        tasks.start_queue(queue_id)
        wait_until(lambda: _all_sent(queue_id), timeout=seconds * count + 5, message="the campaign did not complete")
    gaps = _gaps(_sent_times(queue_id))
    assert len(gaps) == count - 1
    assert all(seconds - EARLY_TOLERANCE_SECONDS <= gap <= seconds + LATE_TOLERANCE_SECONDS for gap in gaps), gaps
    assert SandboxMessage.select().count() == count  # each once
    # A clean stop marks the process stopped, so recovery releases its claims at once.
    assert Heartbeat.get_by_id(workers.current_id()).stopped_at is not None


def test_a_worker_sends_a_campaign_at_the_instance_pace(stub):
    _campaign_goes_out_at_its_pace(stub, seconds=1.5, count=3)  # 40 a minute


@pytest.mark.rabbitmq
def test_a_worker_on_rabbitmq_sends_a_campaign_at_the_instance_pace(rabbit):
    assert isinstance(rabbit.broker, task_broker.ReconnectingRabbitmqBroker)
    _campaign_goes_out_at_its_pace(rabbit, seconds=2.0, count=3)  # 30 a minute


def test_a_transient_gateway_failure_is_retried_by_the_worker_and_sent_once(stub):
    setup = make_tenant(pace=_exact_pace(1.5))
    Instance.update(is_active=False).execute()
    with FakeEvolution(api_key="k") as fake:
        tenants.create_instance(setup.tenant, name="billing", provider="evolution", url=fake.url, token="k",
                                options={"typing_ms": 0, "typing": False}, **_exact_pace(1.5))
        fake.fail_next(1, status=503)
        queue_id = campaign(setup, 1).queue_id
        with _Running(stub.broker):
            tasks.start_queue(queue_id)
            wait_until(lambda: _all_sent(queue_id), timeout=8, message="the retried send did not go out")
        assert len(fake.delivered) == 1 and len(fake.requests_to("/message/sendText")) == 2
    row = Contact.get(Contact.queue == queue_id)
    assert row.status == ContactStatus.SENT and row.attempts == 2
    assert Event.select().where((Event.contact == row.id) & (Event.kind == "send_error")).count() == 1


# --- the actors' functions, branch by branch -----------------------------------------------------------


def test_two_sends_closer_than_the_floor_wait_for_it(stub):
    setup = make_tenant(pace=_exact_pace(1.5))  # 40 a minute
    queue_id = campaign(setup, 2).queue_id
    (first, _), (second, _) = book(queue_id)
    actors.send_contact.fn(first)
    started = time.monotonic()
    actors.send_contact.fn(second)  # its slot is 1.5 s away, but it arrived now (a late broker, a redelivery)
    waited = time.monotonic() - started
    gap, = _gaps(_sent_times(queue_id))
    assert 1.5 - EARLY_TOLERANCE_SECONDS <= gap <= 1.5 + LATE_TOLERANCE_SECONDS
    assert waited >= 1.5 - 2 * EARLY_TOLERANCE_SECONDS


def test_a_floor_longer_than_a_thread_may_sleep_goes_back_to_the_broker(stub):
    setup = make_tenant(pace=_exact_pace(3.0))  # 20 a minute: longer than MAX_FLOOR_SLEEP
    queue_id = campaign(setup, 2).queue_id
    (first, _), (second, slot) = book(queue_id)
    actors.send_contact.fn(first)
    actors.send_contact.fn(second)
    assert Contact.get_by_id(second).status == ContactStatus.QUEUED and Contact.get_by_id(second).attempts == 0
    (message,) = _delayed(stub.broker, actors.SEND_QUEUE)
    assert list(message.args) == [second, slot.isoformat()]
    assert message.options["eta"] - message.message_timestamp == pytest.approx(
        sending.MAX_FLOOR_SLEEP.total_seconds() * 1000, abs=200)
    with _Running(stub.broker):
        wait_until(lambda: _all_sent(queue_id), timeout=8, message="the requeued send did not go out")
    gap, = _gaps(_sent_times(queue_id))
    assert 3.0 - EARLY_TOLERANCE_SECONDS <= gap <= 3.0 + LATE_TOLERANCE_SECONDS


def test_a_retry_books_its_own_slot_of_the_pace(stub):
    setup = make_tenant(pace=_exact_pace(2.0))  # 30 a minute
    Instance.update(is_active=False).execute()
    with FakeEvolution(api_key="k") as fake:
        tenants.create_instance(setup.tenant, name="billing", provider="evolution", url=fake.url, token="k",
                                options={"typing_ms": 0, "typing": False}, **_exact_pace(2.0))
        queue_id = campaign(setup, 2).queue_id
        (failing, _), (other, other_slot) = book(queue_id)
        fake.fail_next(1, status=503)
        with pytest.raises(actors.RetryLater, match="503"):
            actors.send_contact.fn(failing)
        row = Contact.get_by_id(failing)
        assert (row.status, row.slot_at) == (ContactStatus.QUEUED, None)  # no slot: the retry books one
        # The other contact goes at its slot; the retry, arriving now, must not bunch up with it.
        time.sleep(max(0.0, (other_slot - sending.utcnow()).total_seconds()))
        actors.send_contact.fn(other, other_slot.isoformat())
        actors.send_contact.fn(failing)  # the broker's retry
        rebooked = Contact.get_by_id(failing)
        assert rebooked.status == ContactStatus.QUEUED and rebooked.slot_at > other_slot
        (message,) = _delayed(stub.broker, actors.SEND_QUEUE)
        assert list(message.args) == [failing, rebooked.slot_at.isoformat()]
        assert 1.0 <= (message.options["eta"] - message.message_timestamp) / 1000 <= 2.0 + LATE_TOLERANCE_SECONDS
        with _Running(stub.broker):
            wait_until(lambda: _all_sent(queue_id), timeout=8, message="the rebooked retry did not go out")
        assert len(fake.delivered) == 2
    gap, = _gaps(_sent_times(queue_id))
    assert 2.0 - EARLY_TOLERANCE_SECONDS <= gap <= 2.0 + LATE_TOLERANCE_SECONDS


def test_a_database_outage_is_a_database_unavailable_retry(stub):
    setup = make_tenant()
    queue_id = campaign(setup, 1).queue_id
    (contact_id, slot), = book(queue_id)
    billing_db.connect(DEAD_DATABASE_URL)
    try:
        with pytest.raises(actors.DatabaseUnavailable) as raised:
            actors.send_contact.fn(contact_id, slot.isoformat())
        with pytest.raises(actors.DatabaseUnavailable):
            actors.dispatch.fn(str(queue_id))
        with structlog.testing.capture_logs() as logs:
            actors.recover.fn()  # periodic work: skipped until the next run, not retried
            actors.check_instance.fn(setup.instance.id)
    finally:
        billing_db.connect(stub.settings.database_url)
    assert "\n" not in str(raised.value) and actors._retry_when(actors.MAX_MESSAGE_RETRIES + 1, raised.value)
    assert [entry["actor"] for entry in logs] == ["recover", "check_instance"]
    # Nothing was claimed: the retry, once the database is back, sends it.
    actors.send_contact.fn(contact_id, slot.isoformat())
    assert Contact.get_by_id(contact_id).status == ContactStatus.SENT


def test_dispatch_publishes_its_bookings_and_continues_its_chain(stub):
    setup = make_tenant(pace=_exact_pace(2.0))
    queue_id = campaign(setup, 3).queue_id
    actors.dispatch.fn(str(queue_id))
    queued = Contact.select().where(Contact.queue == queue_id)
    assert {c.status for c in queued} == {ContactStatus.QUEUED} and all(c.enqueued_at for c in queued)
    sends = stub.broker.queues[actors.SEND_QUEUE].qsize() + len(_delayed(stub.broker, actors.SEND_QUEUE))
    assert sends == 3


def test_recover_dispatches_the_queues_with_lost_work(stub):
    setup = make_tenant()
    queue_id = campaign(setup, 2).queue_id
    book(queue_id, now=sending.utcnow() - timedelta(minutes=1))  # booked, never published
    actors.recover.fn()
    assert {c.status for c in Contact.select()} == {ContactStatus.PENDING}
    (message,) = [dramatiq.Message.decode(raw) for raw in list(stub.broker.queues[actors.DISPATCH_QUEUE].queue)]
    assert list(message.args) == [str(queue_id)]


def test_check_instance_applies_the_gateway_state(stub):
    setup = make_tenant()
    Instance.update(is_active=False).execute()
    with FakeEvolution(api_key="k") as fake:
        instance = tenants.create_instance(setup.tenant, name="billing", provider="evolution", url=fake.url, token="k")
        fake.disconnect()
        actors.check_instance.fn(instance.id)
    assert Instance.get_by_id(instance.id).health == "down"
    actors.check_instance.fn(setup.instance.id)  # inactive: not asked
    actors.check_instance.fn(10_000)  # gone: nothing to do


def test_the_enqueuer_log_context_follows_the_message(stub):
    structlog.contextvars.bind_contextvars(request_id="req-1", tenant="acme", user="not carried")
    try:
        tasks.start_queue("a63c0000-0000-0000-0000-000000000000")
    finally:
        structlog.contextvars.clear_contextvars()
    (message,) = [dramatiq.Message.decode(raw) for raw in list(stub.broker.queues[actors.DISPATCH_QUEUE].queue)]
    assert message.options[middleware.LOG_CONTEXT_OPTION] == {"request_id": "req-1", "tenant": "acme"}
    context = middleware.LogContext()
    context.before_process_message(stub.broker, message)
    assert structlog.contextvars.get_contextvars() == {
        "request_id": "req-1", "tenant": "acme", "actor": "dispatch", "message_id": message.message_id}
    context.after_process_message(stub.broker, message)
    assert structlog.contextvars.get_contextvars() == {}


# --- the heartbeat thread -----------------------------------------------------------------------


def test_the_heartbeat_thread_beats_survives_an_outage_and_unregisters(db, monkeypatch):
    monkeypatch.setattr(workers, "BEAT_INTERVAL", timedelta(seconds=0.1))
    heartbeat = middleware.HeartbeatThread(kind="scheduler", info={"leader": False})
    with structlog.testing.capture_logs() as logs:
        heartbeat.start()
        row_id = workers.current_id()
        first = Heartbeat.get_by_id(row_id).beat_at
        wait_until(lambda: Heartbeat.get_by_id(row_id).beat_at > first, timeout=3, interval=0.05,
                   message="no second beat")
        heartbeat.update_info(leader=True)
        assert Heartbeat.get_by_id(row_id).info == {"leader": True}
        billing_db.connect(DEAD_DATABASE_URL)
        wait_until(lambda: any(e["event"].startswith("heartbeat failed") for e in logs), timeout=3, interval=0.05,
                   message="the outage was not noticed")
        billing_db.connect(db)
        wait_until(lambda: any(e["event"] == "heartbeat resumed" for e in logs), timeout=3, interval=0.05,
                   message="beating did not resume")
        heartbeat.stop()
    events = [entry["event"] for entry in logs]
    assert events.count("heartbeat failed; retrying every beat until the database answers") == 1
    assert Heartbeat.get_by_id(row_id).stopped_at is not None and not heartbeat._thread.is_alive()


def test_the_consumer_restart_lines_are_dropped():
    dropped = middleware._DropConsumerRestarts()
    record = logging.LogRecord("dramatiq", logging.ERROR, __file__, 1, "Restarting consumer in %0.2f seconds.", (3.0,), None)
    kept = logging.LogRecord("dramatiq", logging.ERROR, __file__, 1, "Something else", (), None)
    assert not dropped.filter(record) and dropped.filter(kept)


# --- the broker ---------------------------------------------------------------------------------


def test_the_outage_backoff_lets_one_consumer_try_at_a_time():
    outage = task_broker.BrokerOutage(backoff_min=0.1, backoff_max=0.3)
    assert [outage.backoff(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.3, 0.3]
    with structlog.testing.capture_logs() as logs:
        outage.lost(ConnectionError("reset"))
        outage.lost(ConnectionError("reset again"))  # one line per outage
        assert outage.down
        outage.wait_for_turn()  # the first turn is at once
        outage.attempt_failed(ConnectionError("refused"))
        turns = []

        def consumer() -> None:
            outage.wait_for_turn()
            turns.append(time.monotonic())

        started = time.monotonic()
        waiting = threading.Thread(target=consumer)
        waiting.start()
        waiting.join(2)
        assert turns and turns[0] - started >= 0.1 - EARLY_TOLERANCE_SECONDS  # after the backoff
        outage.attempt_succeeded()
        outage.attempt_succeeded()  # already up: nothing more said
    assert not outage.down
    assert [entry["event"] for entry in logs] == [
        "broker connection lost; reconnecting", "broker unreachable", "broker reconnected"]
    outage.lost(ConnectionError("down again"))
    outage.wait_for_turn()
    outage.attempt_failed(ConnectionError("refused"))
    with pytest.raises(dramatiq.errors.ConnectionClosed):  # a stopping worker does not wait out the backoff
        outage.wait_for_turn(wanted=lambda: False)


def test_connection_timeouts_are_added_unless_the_url_sets_them():
    url = task_broker.with_connection_timeouts("amqp://guest:guest@127.0.0.1:5672/%2F?socket_timeout=9")
    assert "socket_timeout=9" in url and "blocked_connection_timeout=30" in url


@pytest.mark.rabbitmq
def test_a_consumer_waits_out_an_unreachable_broker_and_reconnects(rabbitmq_url):

    down = task_broker.ReconnectingRabbitmqBroker(url=f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")
    down.outage.backoff_min = down.outage.backoff_max = 0.1
    assert not task_broker.broker_reachable(down) and task_broker.broker_reachable(StubBroker())
    with pytest.raises(dramatiq.errors.ConnectionClosed):
        down.consume("billing-tests.inprocess", timeout=100)
    assert down.outage.down
    up = task_broker.ReconnectingRabbitmqBroker(url=rabbitmq_url)
    up.outage = down.outage  # the same process's consumers, the broker back (their turn waits out the backoff)
    with structlog.testing.capture_logs() as logs:
        consumer = up.consume("billing-tests.inprocess", timeout=100)
        assert next(consumer) is None  # connected, nothing to read
    consumer.close()
    up.channel.queue_delete("billing-tests.inprocess")
    up.close()
    assert not up.outage.down and task_broker.broker_reachable(up)
    assert [entry["event"] for entry in logs] == ["broker reconnected"]
