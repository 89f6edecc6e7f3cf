"""The sending discipline on the production stack (PostgreSQL + RabbitMQ +
``dramatiq tasks`` processes + ``billing scheduler``), under load and failure:
pace across worker processes, daily caps, a gateway going down or failing,
a worker killed mid-send, and a scheduler standing in for a dead one.

Each test starts its own stack (fresh database, purged broker queues), so a
killed process or a tight interval cannot leak into another test.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import statistics
import time
from datetime import datetime, time as dtime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import postgres_database
from tests.e2e.stack import Stack, purge_rabbitmq, wait_until
from tests.factories import phones
from tests.fakes import digits
from tests.fakes.evolution import FakeEvolution

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.timeout(150)]

#: Copied from the product on purpose: a changed text is a changed contract.
DAILY_CAP_REASON = "Limite diário de envios atingido"
NOT_ON_WHATSAPP = "number is not on WhatsApp"
LEADS = "scheduler leads"
STANDS_BY = "another scheduler leads; standing by"
#: scheduler.leader.STANDBY_RETRY_SECONDS: how often a standby asks for the lock.
STANDBY_RETRY_SECONDS = 5

EVOLUTION_KEY = "evo-test-key"
#: FakeEvolution's only instance; the product's instance must carry its name.
EVOLUTION_INSTANCE = "billing"

OPEN_STATUSES = ("pending", "queued", "sending")

_external_ids = itertools.count()


# --- set-up -----------------------------------------------------------------

@pytest.fixture
def production(tmp_path: Path, rabbitmq_url: str):
    """Start a production stack: ``production(worker_processes=4, HEALTH_INTERVAL_SECONDS=1, ...)``.
    Keyword arguments in upper case are environment variables of every process.
    Every process is stopped and the database dropped at the end."""
    with contextlib.ExitStack() as cleanup:

        def start(*, worker_processes: int = 2, worker_threads: int = 4, **env) -> Stack:
            database_url = cleanup.enter_context(postgres_database())
            purge_rabbitmq(rabbitmq_url)  # no message of an earlier run may reach this database
            stack = Stack(kind="production", env={"DATABASE_URL": database_url, "BROKER_URL": rabbitmq_url},
                          workdir=tmp_path, worker_processes=worker_processes, worker_threads=worker_threads,
                          extra_env=env)
            cleanup.callback(stack.stop)
            stack.start()
            return stack

        yield start


def make_tenant(stack: Stack, name: str, *, instances: list[list[str]], tenant_args: tuple = ()) -> str:
    """A tenant open at all hours, with the overdue template, the given
    instances (``billing instance create`` arguments after ``--tenant``) and a key."""
    stack.cli("tenant", "create", name, "--business-hours", "always", "--holidays", "none", *tenant_args)
    stack.create_templates(name)
    for args in instances:
        stack.cli("instance", "create", "--tenant", name, *args)
    return stack.create_key(name)


def sandbox(name: str, *, low: float, high: float, extra: tuple = ()) -> list[str]:
    return ["--provider", "sandbox", "--name", name, "--min-interval", str(low), "--max-interval", str(high),
            "--messages-per-minute", str(round(120 / (low + high), 2)), *extra]


def evolution(fake: FakeEvolution, *, low: float, high: float) -> list[str]:
    return ["--provider", "evolution", "--name", EVOLUTION_INSTANCE, "--url", fake.url, "--token", EVOLUTION_KEY,
            "--min-interval", str(low), "--max-interval", str(high),
            "--messages-per-minute", str(round(120 / (low + high), 2))]


def set_options(stack: Stack, tenant: str, instance: str, options: str) -> None:
    """Instance options (JSON) straight in the database: the CLI has no flag for them."""
    updated = stack.sql(
        "UPDATE instance SET options = %s WHERE name = %s AND tenant_id = (SELECT id FROM tenant WHERE name = %s) "
        "RETURNING id", (options, instance, tenant))
    assert len(updated) == 1


def contacts_body(phone_list: list[str]) -> dict:
    return {
        "external_id": f"discipline-{next(_external_ids)}",
        "contacts": [{"nome_cliente": f"Cliente {i}", "telefone": p, "valor": 100 + i, "data_vencimento": "2025-01-15"}
                     for i, p in enumerate(phone_list)],
    }


def post_campaign(stack: Stack, key: str, phone_list: list[str]) -> dict:
    response = stack.post("send/overdue", contacts_body(phone_list), key=key)
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["total_contacts"] == len(phone_list) and created["rejected_contacts"] == 0, created
    return created


def parse_iso(value: str) -> datetime:
    """The API's ``2025-01-15T12:00:00.123Z`` as a naive UTC datetime."""
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value[:-1])


def sent_by_instance(stack: Stack, queue_id: str) -> dict[str, int]:
    """Sent contacts of a queue per instance name (the API does not say which
    instance sent a contact, so this reads the database)."""
    rows = stack.sql(
        "SELECT i.name, count(*) FROM contact c JOIN instance i ON i.id = c.instance_id "
        "WHERE c.queue_id = %s AND c.status = 'sent' GROUP BY i.name", (queue_id,))
    return dict(rows)


def outbox_by_instance(stack: Stack, tenant: str) -> dict[str, int]:
    rows = stack.sql(
        "SELECT i.name, count(*) FROM sandbox_message m JOIN instance i ON i.id = m.instance_id "
        "JOIN tenant t ON t.id = m.tenant_id WHERE t.name = %s GROUP BY i.name", (tenant,))
    return dict(rows)


def open_contacts(stack: Stack, queue_id: str) -> dict[str, int]:
    rows = stack.sql("SELECT status, count(*) FROM contact WHERE queue_id = %s AND status IN %s GROUP BY status",
                     (queue_id, OPEN_STATUSES))
    return dict(rows)


def next_local_midnight(zone: str, now: datetime) -> datetime:
    """The next midnight in ``zone`` after ``now`` (naive UTC), as naive UTC."""
    local = now.replace(tzinfo=timezone.utc).astimezone(ZoneInfo(zone))
    midnight = datetime.combine(local.date() + timedelta(days=1), dtime(0), tzinfo=ZoneInfo(zone))
    return midnight.astimezone(timezone.utc).replace(tzinfo=None)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def group_size(pgid: int) -> int:
    """How many live processes are in process group ``pgid``."""
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            count += 1
    return count


# --- 1. pace across four worker processes ---------------------------------

def test_pace_holds_across_four_worker_processes(production):
    stack = production(worker_processes=4, worker_threads=4)
    low, high, count = 0.2, 0.3, 200
    mean_expected = (low + high) / 2
    key = make_tenant(stack, "pace", instances=[sandbox("principal", low=low, high=high)])
    assert group_size(stack.processes["worker"].pid) >= 5, "dramatiq master + 4 worker processes expected"

    started = time.monotonic()
    created = post_campaign(stack, key, phones(count))
    status = stack.wait_for(created["queue_id"], key=key, timeout=count * high + 15)
    elapsed = time.monotonic() - started
    assert status["contacts_sent"] == count and status["contacts_failed"] == 0

    contacts = stack.contacts(created["billing_campaign_id"], key=key)
    assert [c["status"] for c in contacts] == ["sent"] * count
    moments = sorted(parse_iso(c["sent_at"]) for c in contacts)
    gaps = [(b - a).total_seconds() for a, b in zip(moments, moments[1:])]
    mean_gap = (moments[-1] - moments[0]).total_seconds() / (count - 1)
    print(f"\n[pace] {count} sends in {elapsed:.1f}s on 4 processes x 4 threads: mean gap {mean_gap:.4f}s "
          f"(expected {mean_expected}), min {min(gaps):.3f}s, max {max(gaps):.3f}s, stdev {statistics.pstdev(gaps):.4f}s")

    # The API shows milliseconds (truncated), so two stamps 0.2 s apart may read 0.199 s apart.
    assert min(gaps) >= low - 0.001, f"two sends {min(gaps):.3f}s apart, below the {low}s floor"
    # The stored stamps (microseconds) must respect the floor exactly.
    stored = [row[0] for row in stack.sql("SELECT sent_at FROM contact WHERE queue_id = %s ORDER BY sent_at",
                                          (created["queue_id"],))]
    assert len(stored) == count
    assert min((b - a).total_seconds() for a, b in zip(stored, stored[1:])) >= low
    assert abs(mean_gap - mean_expected) <= 0.03 * mean_expected, f"mean gap {mean_gap:.4f}s is off the pace"

    counts = stack.outbox_counts()
    assert sum(counts.values()) == count
    assert {c["id"]: counts[c["id"]] for c in contacts} == {c["id"]: 1 for c in contacts}


# --- 2. daily caps ------------------------------------------------------------

def _settle_paused(stack: Stack, queue_id: str, key: str, *, timeout: float = 30) -> dict:
    """Wait until the queue is paused and no contact is booked or in flight."""
    stack.wait_for(queue_id, key=key, statuses=("paused",), timeout=timeout)
    wait_until(lambda: not {s: n for s, n in open_contacts(stack, queue_id).items() if s != "pending"},
               timeout=timeout, message=lambda: f"contacts still in flight: {open_contacts(stack, queue_id)}")
    return stack.status(queue_id, key=key)


@pytest.mark.xfail(strict=True, reason=(
    "product bug: billing/sending.py plan_dispatch pauses the queue (daily_cap) as soon as a dispatch finds every "
    "instance capped, while the slots booked within the cap are still waiting in the broker; claim() then gives "
    "those contacts back to pending (queue not running), so far fewer than the cap are sent today"))
def test_daily_caps_are_filled_exactly_and_never_exceeded(production):
    stack = production()
    zone = "America/Sao_Paulo"

    # Two instances with their own caps share one campaign.
    key = make_tenant(stack, "caps", instances=[
        sandbox("a", low=0.05, high=0.1, extra=("--daily-cap", "30")),
        sandbox("b", low=0.05, high=0.1, extra=("--daily-cap", "40")),
    ])
    before = utcnow()
    created = post_campaign(stack, key, phones(100))
    queue_id = created["queue_id"]
    status = _settle_paused(stack, queue_id, key)
    after = utcnow()
    per_instance = sent_by_instance(stack, queue_id)
    print(f"\n[caps] instance caps 30+40: sent {status['contacts_sent']}, per instance {per_instance}, "
          f"outbox per instance {outbox_by_instance(stack, 'caps')}, open {open_contacts(stack, queue_id)}, "
          f"status {status['status']} {status['pause_reason']!r} until {status['resume_at']}")

    assert status["pause_reason"] == DAILY_CAP_REASON
    midnights = {next_local_midnight(zone, before), next_local_midnight(zone, after)}  # a run across midnight
    assert parse_iso(status["resume_at"]) in midnights
    assert outbox_by_instance(stack, "caps") == per_instance
    assert per_instance.get("a", 0) <= 30 and per_instance.get("b", 0) <= 40
    assert per_instance == {"a": 30, "b": 40}
    assert status["contacts_sent"] == 70 and status["contacts_pending"] == 30 and status["contacts_failed"] == 0
    counts = stack.outbox_counts()
    assert sum(counts.values()) == 70 and set(counts.values()) == {1}

    # It stays there: nothing more goes out today.
    time.sleep(2)
    again = stack.status(queue_id, key=key)
    assert (again["status"], again["contacts_sent"]) == ("paused", 70)

    # A tenant's cap holds across its instances.
    key = make_tenant(stack, "tenantcap", tenant_args=("--daily-cap", "25"), instances=[
        sandbox("a", low=0.05, high=0.1), sandbox("b", low=0.05, high=0.1),
    ])
    created = post_campaign(stack, key, phones(60, start=1000))
    status = _settle_paused(stack, created["queue_id"], key)
    per_instance = sent_by_instance(stack, created["queue_id"])
    print(f"[caps] tenant cap 25: sent {status['contacts_sent']}, per instance {per_instance}")
    assert status["pause_reason"] == DAILY_CAP_REASON
    assert status["contacts_sent"] == 25 and sum(per_instance.values()) == 25
    assert sum(outbox_by_instance(stack, "tenantcap").values()) == 25


# --- 3. the gateway goes down mid-campaign --------------------------------

def test_gateway_down_pauses_the_queue_and_it_resumes_on_its_own(production):
    health_interval = 1
    stack = production(HEALTH_INTERVAL_SECONDS=health_interval, RECOVERY_INTERVAL_SECONDS=1)
    count = 40
    with FakeEvolution(api_key=EVOLUTION_KEY, instance=EVOLUTION_INSTANCE) as fake:
        key = make_tenant(stack, "evo", instances=[evolution(fake, low=0.08, high=0.12)])
        set_options(stack, "evo", EVOLUTION_INSTANCE, '{"typing_ms": 0}')
        phone_list = phones(count)
        created = post_campaign(stack, key, phone_list)
        queue_id = created["queue_id"]

        wait_until(lambda: len(fake.delivered) >= 10, timeout=20, message=lambda: f"{len(fake.delivered)} delivered")
        fake.disconnect()
        down_at = time.monotonic()
        delivered_at_disconnect = len(fake.delivered)
        wait_until(lambda: stack.status(queue_id, key=key)["status"] == "instance_down", timeout=health_interval + 4,
                   interval=0.1, message=lambda: f"queue is {stack.status(queue_id, key=key)}\n{stack.logs()}")
        noticed = time.monotonic() - down_at
        assert noticed <= health_interval + 2, f"instance_down after {noticed:.1f}s"

        # Once down, nothing more is tried: sends already claimed may finish failing.
        time.sleep(1.0)
        tried = len(fake.requests_to("/message/sendText"))
        time.sleep(3.0)
        status = stack.status(queue_id, key=key)
        assert len(fake.requests_to("/message/sendText")) == tried, "sends kept going to a down gateway"
        assert len(fake.messages) == delivered_at_disconnect
        assert status["status"] == "instance_down" and status["contacts_failed"] == 0
        assert status["contacts_sent"] == delivered_at_disconnect < count

        fake.connect()
        up_at = time.monotonic()
        status = stack.wait_for(queue_id, key=key, timeout=30)
        resumed_in = time.monotonic() - up_at
        print(f"\n[down] {delivered_at_disconnect} delivered before disconnect; instance_down after {noticed:.2f}s; "
              f"{tried} sendText calls in all while down; completed {resumed_in:.1f}s after reconnect")
        assert status["contacts_sent"] == count and status["contacts_failed"] == 0

        contacts = stack.contacts(created["billing_campaign_id"], key=key)
        received = collections.Counter(message.chat_id for message in fake.delivered)
        assert received == {f"{digits(p)}@s.whatsapp.net": 1 for p in phone_list}
        assert sorted(c["provider_message_id"] for c in contacts) == sorted(m.id for m in fake.messages)
        # Being down is not the contacts' fault: no attempt was used up by it.
        assert {c["attempts"] for c in contacts} == {1}


# --- 4. a gateway failing half the sends ---------------------------------

def test_failing_gateway_retries_up_to_max_attempts_and_never_sends_twice(production):
    stack = production(SEND_RETRY_MIN_BACKOFF_MS=200, SEND_RETRY_MAX_BACKOFF_MS=1000)
    max_attempts = 3
    good = phones(30)
    absent = phones(5, start=500)
    with FakeEvolution(api_key=EVOLUTION_KEY, instance=EVOLUTION_INSTANCE) as fake:
        key = make_tenant(stack, "flaky", tenant_args=("--max-attempts", str(max_attempts)),
                          instances=[evolution(fake, low=0.08, high=0.12)])
        set_options(stack, "flaky", EVOLUTION_INSTANCE, '{"typing_ms": 0}')
        fake.fail_every(2, status=500)
        fake.not_on_whatsapp(*absent)
        created = post_campaign(stack, key, good + absent)
        status = stack.wait_for(created["queue_id"], key=key, timeout=60)
        contacts = stack.contacts(created["billing_campaign_id"], key=key)

    by_phone = {c["telefone"]: c for c in contacts}
    assert not [c for c in contacts if c["status"] in OPEN_STATUSES]
    attempts = collections.Counter((c["status"], c["attempts"]) for c in contacts if c["telefone"] in good)
    print(f"\n[flaky] (status, attempts) of the {len(good)} reachable: {sorted(attempts.items())}; "
          f"{len(fake.requests_to('/message/sendText'))} sendText calls, {len(fake.delivered)} delivered")

    delivered = collections.Counter(message.chat_id for message in fake.delivered)
    for phone in good:
        contact = by_phone[phone]
        chat = f"{digits(phone)}@s.whatsapp.net"
        assert contact["status"] in ("sent", "failed"), contact
        if contact["status"] == "sent":
            assert 1 <= contact["attempts"] <= max_attempts and delivered[chat] == 1, (contact, delivered[chat])
        else:
            assert contact["attempts"] == max_attempts and contact["reason"], contact
            assert delivered[chat] == 0, contact
    assert max(delivered.values()) == 1
    assert any(c["status"] == "sent" and c["attempts"] > 1 for c in contacts), "no send was retried"
    assert status["contacts_sent"] + status["contacts_failed"] == len(good) + len(absent)

    numbers_sent_to = {digits(str((r.json or {}).get("number", ""))) for r in fake.requests_to("/message/sendText")}
    for phone in absent:
        contact = by_phone[phone]
        assert (contact["status"], contact["reason"], contact["attempts"]) == ("failed", NOT_ON_WHATSAPP, 1), contact
        assert digits(phone) not in numbers_sent_to


# --- 5. a worker killed mid-campaign ----------------------------------------

def test_kill_9_of_the_worker_loses_nothing_and_duplicates_only_in_flight_sends(production):
    stack = production(worker_processes=4, worker_threads=4, CLAIM_TIMEOUT_SECONDS=3, RECOVERY_INTERVAL_SECONDS=1)
    count = 150
    key = make_tenant(stack, "killed", instances=[sandbox("principal", low=0.04, high=0.06)])
    created = post_campaign(stack, key, phones(count))
    queue_id = created["queue_id"]

    wait_until(lambda: stack.status(queue_id, key=key)["contacts_sent"] >= 40, timeout=30, interval=0.05,
               message="40 sends never happened")
    stack.kill("worker")  # SIGKILL to the dramatiq master and its worker processes
    in_flight = stack.sql("SELECT count(*) FROM contact WHERE queue_id = %s AND status = 'sending'", (queue_id,))[0][0]
    at_kill = dict(stack.sql("SELECT status, count(*) FROM contact WHERE queue_id = %s GROUP BY status", (queue_id,)))
    outbox_at_kill = sum(stack.outbox_counts().values())

    stack.start_worker("worker2")
    status = stack.wait_for(queue_id, key=key, timeout=45)
    counts = stack.outbox_counts()
    contacts = stack.contacts(created["billing_campaign_id"], key=key)
    duplicates = sum(n - 1 for n in counts.values())
    print(f"\n[kill] at the kill: {at_kill} ({in_flight} in flight), {outbox_at_kill} in the outbox; "
          f"after: {status['contacts_sent']} sent, {sum(counts.values())} messages, {duplicates} duplicates")

    assert status["contacts_sent"] == count and status["contacts_failed"] == 0
    assert all(counts[c["id"]] >= 1 for c in contacts), "a contact was never sent"
    assert set(counts) == {c["id"] for c in contacts}
    assert duplicates <= in_flight


# --- 6. two schedulers ---------------------------------------------------------

def _leading(stack: Stack, name: str) -> bool:
    return any(line.get("event") == LEADS for line in stack.log_lines(name))


def _standing_by(stack: Stack, name: str) -> bool:
    return any(line.get("event") == STANDS_BY for line in stack.log_lines(name))


def _queue_depth(url: str, queue: str) -> int:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def test_a_standby_scheduler_takes_over_and_recovery_goes_on(production, rabbitmq_url):
    stack = production(RECOVERY_INTERVAL_SECONDS=1)
    stack.start_scheduler("scheduler2")
    names = ("scheduler", "scheduler2")

    wait_until(lambda: sum(map(lambda n: _leading(stack, n), names)) == 1
               and sum(map(lambda n: _standing_by(stack, n), names)) == 1,
               timeout=15, message=lambda: stack.logs())
    leader, standby = names if _leading(stack, "scheduler") else reversed(names)
    assert not _leading(stack, standby) and _standing_by(stack, standby) and not _standing_by(stack, leader)
    time.sleep(STANDBY_RETRY_SECONDS + 1)  # the standby asked again at least once and still stands by
    assert not _leading(stack, standby)

    stack.kill(leader)
    killed_at = time.monotonic()
    wait_until(lambda: _leading(stack, standby), timeout=STANDBY_RETRY_SECONDS + 5, interval=0.1,
               message=lambda: stack.log(standby))
    took_over = time.monotonic() - killed_at
    assert stack.alive(standby) and not stack.alive(leader)

    # Work whose broker message is lost is found by the new leader's recovery.
    key = stack.create_tenant("orphan", messages_per_minute=600)
    stack.stop_process("worker")
    created = post_campaign(stack, key, phones(10))
    assert _queue_depth(rabbitmq_url, "dispatch") >= 1  # the dispatch message is in RabbitMQ...
    purge_rabbitmq(rabbitmq_url)  # ...and now it is gone
    stack.start_worker("worker2")
    started = time.monotonic()
    status = stack.wait_for(created["queue_id"], key=key, timeout=20)
    recovered_in = time.monotonic() - started
    print(f"\n[leader] {leader} led, {standby} stood by; {standby} led {took_over:.1f}s after kill -9 of {leader}; "
          f"purged queue completed {recovered_in:.1f}s after the new worker started")
    assert status["contacts_sent"] == 10
    assert any(line.get("event") == "recovered" for line in stack.log_lines("worker2"))
    counts = stack.outbox_counts()
    assert sorted(counts.values()) == [1] * 10
