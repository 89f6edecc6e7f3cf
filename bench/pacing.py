"""Pacing benchmark: how closely the production stack keeps an instance's pace,
and how fast a pause stops the sending.

The pace is what keeps an unofficial WhatsApp number alive: a random gap
between ``min_interval`` and ``max_interval`` between two messages, never less
than ``min_interval``. Dispatch books every contact a slot in the database
(``instance.next_slot_at``) and hands the broker a ``send_contact`` message
delayed until that slot; the worker that runs it passes the instance's floor
(``pacing.admit``: at least ``min_interval`` after the previous send) and
records that moment as the contact's ``sent_at``. So the intervals between
consecutive ``sent_at`` are what WhatsApp sees, and they carry every delay
between the booked slot and the send: RabbitMQ, Dramatiq's delay queue, the
worker threads, the floor. This runs the real production stack
(tests.e2e.stack.Stack: gunicorn, ``dramatiq tasks`` with WORKER_PROCESSES x
WORKER_THREADS, ``billing scheduler``) on PostgreSQL and RabbitMQ, drives it
through the CLI and the HTTP API as an operator and an ERP would, and prints:

1. Pacing accuracy. One sandbox instance with min 0.2 s / max 0.3 s (mean
   0.25 s) sends a campaign of ACCURACY_CONTACTS notifications (they ignore
   business hours); the intervals between consecutive ``sent_at`` (from
   ``GET campaign/<id>/contacts``, millisecond timestamps) are compared with
   the configured pace. A second run at min 0.05 s / max 0.1 s shows where the
   stack's scheduling latency starts to matter: the lateness of each send
   after its booked slot (``sent_at - slot_at``, read from the database,
   which the API does not expose) is printed next to the intervals.
2. Pause latency. A campaign of PAUSE_CONTACTS at ~20/s (min = max = 0.05 s)
   is paused (``POST queue/<id>/control {"action": "pause"}``) once
   PAUSE_AFTER_SENT contacts are sent; when the sent count has not moved for
   QUIET_SECONDS, the time from the pause call's answer to the last send
   (the latest ``sent_at`` among the sends after the pause call began) and the
   number of sends after the answer are printed. PAUSE_RUNS campaigns, each on
   a tenant and instance of its own (a tenant's instances share one pace, and
   a paused campaign keeps the slots it booked). The last one is then resumed
   and the time from the resume call's answer to the next send is printed,
   with what the database held at that moment (contacts still booked, given
   back, how far ahead the instance's next free slot was).

Every tenant, instance and key is made with the ``billing`` CLI, on a
PostgreSQL database created for this run and dropped after it (server:
BENCH_POSTGRES_URL), with the RabbitMQ vhost of BENCH_RABBITMQ_URL, whose
queues are purged before and after. No other run may use that vhost at the
same time (it would take this run's messages): the benchmark takes its turn
on it like the e2e tests do (tests.e2e.stack.hold_broker), waits for workers
of a run that does not take turns to leave, and gives up after
BROKER_WAIT_TIMEOUT. Figures are printed, never checked: a timing is not a
test.

Run: ``make bench`` (or ``.venv/bin/python -m bench.pacing``). About 2.5 to 3
minutes on 2 CPUs (plus any wait for another run's turn on the vhost), of
which ~65 s is the configured pace of the two accuracy campaigns and ~35-60 s
what the stack adds to it.
"""
from __future__ import annotations

import contextlib
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import psycopg2

from bench.postgres import redact, scratch_database, server_version
from billing.adapters import encryption
from billing.adapters.models import Contact, Instance, Tenant
from billing.config import DEFAULT_RECOVERY_INTERVAL_SECONDS
from billing.sending import MAX_FLOOR_SLEEP
from tests.e2e.stack import (
    Stack,
    broker_consumers,
    hold_broker,
    purge_rabbitmq,
    release_broker,
    wait_for_idle_broker,
)

#: The worker pool of the benchmarked stack: ``dramatiq tasks --processes --threads``.
WORKER_PROCESSES = 4
WORKER_THREADS = 4

#: Contacts of each pacing-accuracy campaign.
ACCURACY_CONTACTS = 200


@dataclass(frozen=True)
class PaceRun:
    """One pacing-accuracy campaign: its tenant and its instance's bounds (s)."""

    tenant: str
    min_interval: float
    max_interval: float

    @property
    def mean(self) -> float:
        return (self.min_interval + self.max_interval) / 2


#: The pace asked for, then a faster one where scheduling latency shows.
ACCURACY_RUNS = (
    PaceRun("pace-0.25", 0.2, 0.3),
    PaceRun("pace-0.075", 0.05, 0.1),
)

#: Contacts of each pause campaign, its fixed gap (s), and when to pause.
PAUSE_CONTACTS = 300
PAUSE_INTERVAL = 0.05
PAUSE_AFTER_SENT = 50
#: Pause campaigns (the median of their latencies is printed).
PAUSE_RUNS = 3
#: A paused queue counts as stopped once its sent count stays put this long.
QUIET_SECONDS = 3.0

#: ``sent_at`` comes from the API truncated to milliseconds, so an interval
#: may read up to this much shorter than it was.
SENT_AT_RESOLUTION = 0.001
#: An interval within this much above min_interval was held by the floor.
FLOOR_BAND = 0.010

#: Poll periods: the pause trigger (fine, so the pause lands near
#: PAUSE_AFTER_SENT) and the other waits.
TRIGGER_POLL_SECONDS = 0.05
POLL_SECONDS = 0.1
#: Slack on top of a campaign's longest possible duration before giving up.
CAMPAIGN_SLACK_SECONDS = 30
#: Longest wait for the pause trigger, the quiet period, and a resumed send.
PAUSE_TRIGGER_TIMEOUT = 30
QUIET_TIMEOUT = 30
RESUME_TIMEOUT = 40
#: Longest wait for the worker processes to consume the queues.
WORKERS_READY_TIMEOUT = 60
#: How long the stack's processes get to stop on SIGTERM before SIGKILL.
STOP_GRACE_SECONDS = 8
#: Longest wait for another run (an e2e suite) to give up the RabbitMQ vhost;
#: as long as the tests wait for each other.
BROKER_WAIT_TIMEOUT = 180

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_URL_ENV = "BENCH_POSTGRES_URL"
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
RABBITMQ_URL_ENV = "BENCH_RABBITMQ_URL"
CONNECT_TIMEOUT_SECONDS = 3
DATABASE_PREFIX = "bench_pacing_"

#: Notifications ignore business hours, so the run does not depend on the clock.
TEMPLATE_TYPE = "notification"
SEND_PATH = f"send/{TEMPLATE_TYPE}"
TEMPLATE_TEXT = "Olá {{nome_cliente}}, {{mensagem}}"
MESSAGE = "este é um aviso de teste do benchmark de ritmo."

#: Queues whose consumers show the workers are up (one consumer per process each).
WORKER_QUEUES = ("dispatch", "send", "send.DQ")

PROGRAM = "bench.pacing"

T = TypeVar("T")


class BenchError(Exception):
    """The stack did not do what the benchmark needs within a deadline."""


# --- services --------------------------------------------------------------




def first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def admin_connection(server_url: str):
    """An autocommit connection to PostgreSQL; exits with one line if unreachable."""
    try:
        conn = psycopg2.connect(server_url, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg2.OperationalError as exc:
        raise SystemExit(f"{PROGRAM}: cannot connect to PostgreSQL at {redact(server_url)}: {first_line(exc)}") from None
    conn.autocommit = True
    return conn


def rabbitmq_version(url: str) -> str:
    """RabbitMQ's version; exits with one line if unreachable."""
    import pika

    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = CONNECT_TIMEOUT_SECONDS
    params.blocked_connection_timeout = CONNECT_TIMEOUT_SECONDS
    try:
        connection = pika.BlockingConnection(params)
    except Exception as exc:  # pika raises many kinds; AMQPConnectionError carries the cause in args
        reason = " ".join(str(exc).split()) or "; ".join(" ".join(str(a).split()) for a in exc.args) or repr(exc)
        raise SystemExit(f"{PROGRAM}: cannot connect to RabbitMQ at {redact(url)}: {reason}") from None
    try:
        version = connection._impl.server_properties.get("version", b"?")
    finally:
        connection.close()
    return version.decode() if isinstance(version, bytes) else str(version)






def claim_broker(url: str) -> float:
    """Take this process's turn on the vhost (kept until release_broker or the
    process ends), wait until no worker consumes its queues, then purge them.
    Returns the seconds waited; exits with one line after BROKER_WAIT_TIMEOUT."""
    began = time.monotonic()
    try:
        try:
            hold_broker(url, timeout=0)
        except AssertionError:
            print(f"{PROGRAM}: another run holds this RabbitMQ vhost; waiting up to {BROKER_WAIT_TIMEOUT}s "
                  "for its end", file=sys.stderr)
            hold_broker(url, timeout=BROKER_WAIT_TIMEOUT)
        wait_for_idle_broker(url, timeout=max(1.0, BROKER_WAIT_TIMEOUT - (time.monotonic() - began)))
    except AssertionError as exc:
        raise SystemExit(f"{PROGRAM}: {first_line(exc)}") from None
    purge_rabbitmq(url)
    return time.monotonic() - began


# --- time ------------------------------------------------------------------


def parse_iso(value: str) -> float:
    """An API timestamp (``...T12:00:00.123Z``) as epoch seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def naive_utc_epoch(value: datetime) -> float:
    """A stored naive-UTC datetime as epoch seconds."""
    return value.replace(tzinfo=UTC).timestamp()


def poll(check: Callable[[], T], *, timeout: float, interval: float, what: str) -> T:
    """Call ``check`` until it returns something truthy, or raise BenchError."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise BenchError(f"{what}: not reached after {timeout:g}s")
        time.sleep(interval)


def percentiles(values: list[float]) -> tuple[float, float]:
    """p5 and p95 (inclusive method: within the measured range)."""
    cuts = statistics.quantiles(values, n=20, method="inclusive")
    return cuts[0], cuts[-1]


# --- the stack -------------------------------------------------------------


def messages_per_minute(min_interval: float, max_interval: float) -> float:
    return 60 / ((min_interval + max_interval) / 2)


def create_sender(stack: Stack, tenant: str, *, min_interval: float, max_interval: float) -> str:
    """A tenant open at all hours, a notification template, one sandbox
    instance at the given pace, and an API key (returned), through the CLI."""
    stack.cli("tenant", "create", tenant, "--business-hours", "always", "--holidays", "none")
    stack.cli("template", "create", "--tenant", tenant, "--type", TEMPLATE_TYPE, "--name", "bench",
              "--variation", TEMPLATE_TEXT)
    stack.cli("instance", "create", "--tenant", tenant, "--provider", "sandbox", "--name", "sandbox",
              "--messages-per-minute", f"{messages_per_minute(min_interval, max_interval):g}",
              "--min-interval", f"{min_interval:g}", "--max-interval", f"{max_interval:g}")
    return stack.create_key(tenant)


def wait_for_workers(stack: Stack, broker_url: str) -> None:
    """Every worker process consumes the queues (gunicorn answering /health
    says nothing about the workers, which boot on their own)."""
    def ready() -> bool:
        for name in stack.processes:
            if not stack.alive(name):
                raise BenchError(f"{name} exited early:\n{stack.log(name)}")
        consumers = broker_consumers(broker_url)
        return all(consumers.get(queue, 0) >= WORKER_PROCESSES for queue in WORKER_QUEUES)

    poll(ready, timeout=WORKERS_READY_TIMEOUT, interval=0.25, what="worker processes consuming the queues")


@dataclass
class Campaign:
    campaign_id: str
    queue_id: str
    key: str
    posted_at: float  # epoch seconds when the POST began


def start_campaign(stack: Stack, key: str, *, contacts: int, label: str) -> Campaign:
    body = {
        "external_id": f"bench-pacing-{label}",
        "contacts": [
            {"nome_cliente": f"Cliente {i + 1}", "telefone": f"+55119{80_000_000 + i:08d}", "mensagem": MESSAGE}
            for i in range(contacts)
        ],
    }
    posted_at = time.time()
    response = stack.post(SEND_PATH, body, key=key)
    reply = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 200 or reply.get("total_contacts") != contacts:
        raise BenchError(f"POST {SEND_PATH} answered {response.status_code}: {response.text[:300]}")
    return Campaign(reply["billing_campaign_id"], reply["queue_id"], key, posted_at)


def control(stack: Stack, campaign: Campaign, action: str) -> tuple[float, float, dict]:
    """POST queue/<id>/control; returns (call began, answer received, body) in epoch seconds."""
    began = time.time()
    response = stack.post(f"queue/{campaign.queue_id}/control", {"action": action}, key=campaign.key)
    answered = time.time()
    if response.status_code != 200:
        raise BenchError(f"{action} answered {response.status_code}: {response.text[:300]}")
    return began, answered, response.json()


def sent_times(stack: Stack, campaign: Campaign) -> list[tuple[int, int, float]]:
    """(contact id, request index, sent_at) of every sent contact, from the API."""
    return [(c["id"], c["index"], parse_iso(c["sent_at"]))
            for c in stack.contacts(campaign.campaign_id, key=campaign.key) if c["sent_at"]]


def sent_count(stack: Stack, campaign: Campaign) -> int:
    return stack.status(campaign.queue_id, key=campaign.key)["contacts_sent"]


# --- 1. pacing accuracy ----------------------------------------------------


@dataclass
class Accuracy:
    run: PaceRun
    intervals: list[float]
    out_of_order: int
    lateness: list[float]  # sent_at - slot_at (s), from the database
    claim_lateness: list[float]  # claimed_at (the last claim) - slot_at (s), from the database
    requeues: int  # sends the floor turned back to the broker (worker logs)
    first_send_after_answer: float
    span: float
    wall: float
    failed: int


def run_accuracy(stack: Stack, run: PaceRun, key: str) -> Accuracy:
    campaign = start_campaign(stack, key, contacts=ACCURACY_CONTACTS, label=run.tenant)
    answered = time.time()
    # Twice the slowest pace: a late stack is measured, not failed.
    longest = 2 * (ACCURACY_CONTACTS - 1) * run.max_interval + CAMPAIGN_SLACK_SECONDS
    status = poll(lambda: (s := stack.status(campaign.queue_id, key=campaign.key))["status"] == "completed" and s,
                  timeout=longest, interval=POLL_SECONDS * 5, what=f"campaign of {run.tenant} completed")
    sent = sent_times(stack, campaign)
    times = sorted(t for _, _, t in sent)
    by_index = [t for _, _, t in sorted(sent, key=lambda row: row[1])]
    rows = stack.sql(
        f"SELECT sent_at, claimed_at, slot_at FROM {Contact._meta.table_name} "
        "WHERE queue_id = %s AND sent_at IS NOT NULL AND slot_at IS NOT NULL",
        (campaign.queue_id,),
    )
    return Accuracy(
        run=run,
        intervals=[b - a for a, b in zip(times, times[1:])],
        out_of_order=sum(1 for a, b in zip(by_index, by_index[1:]) if b < a),
        lateness=[(sent_at - slot_at).total_seconds() for sent_at, _, slot_at in rows],
        claim_lateness=[(claimed_at - slot_at).total_seconds() for _, claimed_at, slot_at in rows],
        requeues=floor_requeues(stack, campaign),
        first_send_after_answer=times[0] - answered,
        span=times[-1] - times[0],
        wall=parse_iso(status["completed_at"]) - campaign.posted_at,
        failed=ACCURACY_CONTACTS - len(times),
    )


def floor_requeues(stack: Stack, campaign: Campaign) -> int:
    """Sends of the campaign that found the instance's floor closed for too
    long and went back to the broker (``send`` logged with outcome ``later``)."""
    return sum(1 for line in stack.worker_log_lines()
               if line.get("event") == "send" and line.get("outcome") == "later"
               and line.get("queue_id") == campaign.queue_id)


def print_accuracy(results: list[Accuracy]) -> None:
    print(f"1. Pacing accuracy: one sandbox instance, {ACCURACY_CONTACTS} notifications, intervals between "
          "consecutive sent_at")
    width, col = 46, 16
    print(f"{'':{width}}" + "".join(f"{r.run.tenant:>{col}}" for r in results))

    def row(label: str, cell: Callable[[Accuracy], str]) -> None:
        print(f"{label:{width}}" + "".join(f"{cell(r):>{col}}" for r in results))

    row("configured min / max (s)", lambda r: f"{r.run.min_interval:.3f} / {r.run.max_interval:.3f}")
    row("configured mean (s)", lambda r: f"{r.run.mean:.3f}")
    row("measured mean (s)", lambda r: f"{statistics.fmean(r.intervals):.3f}")
    row("error of the mean", lambda r: f"{(statistics.fmean(r.intervals) / r.run.mean - 1) * 100:+.1f}%")
    row("median (s)", lambda r: f"{statistics.median(r.intervals):.3f}")
    row("p5 / p95 (s)", lambda r: "{:.3f} / {:.3f}".format(*percentiles(r.intervals)))
    row("minimum / maximum (s)", lambda r: f"{min(r.intervals):.3f} / {max(r.intervals):.3f}")
    row("intervals < min (beyond 1 ms rounding)",
        lambda r: str(sum(1 for i in r.intervals if i < r.run.min_interval - SENT_AT_RESOLUTION)))
    row("intervals < min (as read, ms timestamps)",
        lambda r: str(sum(1 for i in r.intervals if i < r.run.min_interval)))
    row(f"held by the floor (< min + {FLOOR_BAND * 1000:.0f} ms)",
        lambda r: f"{sum(1 for i in r.intervals if i < r.run.min_interval + FLOOR_BAND) / len(r.intervals):.0%}")
    row("intervals > max", lambda r: f"{sum(1 for i in r.intervals if i > r.run.max_interval) / len(r.intervals):.0%}")
    row("sends out of request order", lambda r: str(r.out_of_order))
    row("claimed_at - slot: median / p95 (s)",
        lambda r: f"{statistics.median(r.claim_lateness):.3f} / {percentiles(r.claim_lateness)[1]:.3f}")
    row("sent_at - slot: median / p95 (s)",
        lambda r: f"{statistics.median(r.lateness):.3f} / {percentiles(r.lateness)[1]:.3f}")
    row("sent_at - slot: maximum (s)", lambda r: f"{max(r.lateness):.3f}")
    row("sends the floor sent back to the broker", lambda r: str(r.requeues))
    row("first send after the POST answer (s)", lambda r: f"{r.first_send_after_answer:.3f}")
    row("first -> last send (s)", lambda r: f"{r.span:.2f}")
    row("  expected: (n - 1) x configured mean (s)", lambda r: f"{(ACCURACY_CONTACTS - 1) * r.run.mean:.2f}")
    row("total wall time: POST -> completed_at (s)", lambda r: f"{r.wall:.2f}")
    row("contacts not sent", lambda r: str(r.failed))
    print("sent_at: the moment the instance's floor admitted the send (API, truncated to ms). slot: the moment")
    print("dispatch booked for the send; claimed_at: when a worker thread claimed it (last claim); both from the")
    print("database. held by the floor: the send waited for min_interval. sent back: the floor stayed closed after")
    print(f"two waits, so the send went back to the broker with a {MAX_FLOOR_SLEEP.total_seconds():g} s delay "
          "(worker logs, outcome 'later').")


# --- 2. pause latency ------------------------------------------------------


@dataclass
class Pause:
    tenant: str
    campaign: Campaign
    sent_at_call: int  # sent count seen by the poll that triggered the pause
    call_seconds: float
    latency: float | None  # pause answer -> last send after the call began
    after_answer: int
    claimed_before_answer: int  # of the sends after the answer
    final_sent: int


def run_pause(stack: Stack, tenant: str, key: str, *, label: str) -> Pause:
    campaign = start_campaign(stack, key, contacts=PAUSE_CONTACTS, label=label)
    seen = poll(lambda: (n := sent_count(stack, campaign)) >= PAUSE_AFTER_SENT and n,
                timeout=PAUSE_TRIGGER_TIMEOUT, interval=TRIGGER_POLL_SECONDS, what=f"{PAUSE_AFTER_SENT} sent ({tenant})")
    began, answered, reply = control(stack, campaign, "pause")
    if not reply.get("changed"):
        raise BenchError(f"pause of {tenant} changed nothing: {reply}")

    # Quiet: the sent count has not moved for QUIET_SECONDS.
    last = {"count": sent_count(stack, campaign), "since": time.monotonic()}

    def quiet() -> bool:
        count = sent_count(stack, campaign)
        if count != last["count"]:
            last.update(count=count, since=time.monotonic())
        return time.monotonic() - last["since"] >= QUIET_SECONDS

    poll(quiet, timeout=QUIET_TIMEOUT, interval=POLL_SECONDS, what=f"sends of paused {tenant} stopped")

    sent = sent_times(stack, campaign)
    after_began = [t for _, _, t in sent if t >= began]
    late_ids = [contact_id for contact_id, _, t in sent if t > answered]
    claimed_before = 0
    if late_ids:
        rows = stack.sql(f"SELECT claimed_at FROM {Contact._meta.table_name} WHERE id = ANY(%s)", (late_ids,))
        claimed_before = sum(1 for (claimed_at,) in rows if claimed_at and naive_utc_epoch(claimed_at) <= answered)
    return Pause(
        tenant=tenant, campaign=campaign, sent_at_call=seen, call_seconds=answered - began,
        latency=max(after_began) - answered if after_began else None,
        after_answer=len(late_ids), claimed_before_answer=claimed_before, final_sent=len(sent),
    )


@dataclass
class Resume:
    booked: int  # contacts still queued (booked before the pause) at the resume call
    given_back: int  # contacts the pause gave back (pending) at the resume call
    next_slot_ahead: float  # instance.next_slot_at - resume call (s)
    call_seconds: float
    next_send: float  # resume answer -> first send after it
    next_send_was_booked: bool
    given_back_send: float | None  # resume answer -> first send of a given-back contact


def run_resume(stack: Stack, pause: Pause) -> Resume:
    contacts, instances, tenants = (m._meta.table_name for m in (Contact, Instance, Tenant))
    queue_id = pause.campaign.queue_id
    states = dict(stack.sql(
        f"SELECT id, status FROM {contacts} WHERE queue_id = %s AND status IN ('pending', 'queued')", (queue_id,)))
    (next_slot_at,), = stack.sql(
        f"SELECT i.next_slot_at FROM {instances} i JOIN {tenants} t ON i.tenant_id = t.id WHERE t.name = %s",
        (pause.tenant,))
    began, answered, reply = control(stack, pause.campaign, "resume")
    if not reply.get("changed"):
        raise BenchError(f"resume of {pause.tenant} changed nothing: {reply}")
    given_back = {contact_id for contact_id, status in states.items() if status == "pending"}
    before = {contact_id for contact_id, _, t in sent_times(stack, pause.campaign) if t <= began}

    found: dict[str, tuple[int, float]] = {}

    def sends_seen() -> bool:
        for contact_id, _, t in sorted(sent_times(stack, pause.campaign), key=lambda row: row[2]):
            if contact_id in before:
                continue
            found.setdefault("next", (contact_id, t))
            if contact_id in given_back:
                found.setdefault("given_back", (contact_id, t))
        return "next" in found and ("given_back" in found or not given_back)

    ahead = naive_utc_epoch(next_slot_at) - began if next_slot_at else 0.0
    try:
        poll(sends_seen, timeout=max(RESUME_TIMEOUT, ahead + CAMPAIGN_SLACK_SECONDS), interval=POLL_SECONDS * 2,
             what=f"sends of resumed {pause.tenant}")
    finally:
        # The rest of the campaign is not measured: end it.
        control(stack, pause.campaign, "cancel")
    next_id, next_at = found["next"]
    return Resume(
        booked=sum(1 for status in states.values() if status == "queued"),
        given_back=len(given_back),
        next_slot_ahead=ahead,
        call_seconds=answered - began,
        next_send=next_at - answered,
        next_send_was_booked=states.get(next_id) == "queued",
        given_back_send=found["given_back"][1] - answered if "given_back" in found else None,
    )


def print_pauses(pauses: list[Pause], resume: Resume) -> None:
    rate = 1 / PAUSE_INTERVAL
    print(f"2. Pause latency: {PAUSE_CONTACTS} notifications at {rate:g}/s (min = max = {PAUSE_INTERVAL:g} s), "
          f"paused once {PAUSE_AFTER_SENT} are sent")
    header = ("run", "sent at call", "call (ms)", "answer -> last send (s)", "sent after answer",
              "of them claimed before", "sent in all")
    widths = (5, 13, 10, 24, 18, 23, 12)
    print("".join(f"{h:>{w}}" for h, w in zip(header, widths)))
    for number, p in enumerate(pauses, 1):
        latency = f"{p.latency:.3f}" if p.latency is not None else "none"
        cells = (str(number), str(p.sent_at_call), f"{p.call_seconds * 1000:.0f}", latency, str(p.after_answer),
                 str(p.claimed_before_answer), str(p.final_sent))
        print("".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    # No send after the call began: sending had stopped by the answer.
    latencies = [p.latency if p.latency is not None else 0.0 for p in pauses]
    print(f"{'median':>5}{'':13}{statistics.median(p.call_seconds for p in pauses) * 1000:>10.0f}"
          f"{statistics.median(latencies):>24.3f}{statistics.median(p.after_answer for p in pauses):>18g}")
    print("answer -> last send: the latest sent_at among sends after the pause call began, minus the moment its")
    print("answer arrived (negative: the last send came before the answer; none: no send after the call began,")
    print(f"counted as 0 in the median). Stopped: no new send for {QUIET_SECONDS:g} s.")
    print("claimed before: the worker had claimed the contact (queued -> sending) before the pause answer.")
    print()
    print(f"Resume of run {len(pauses)} (right after its pause was measured)")
    width = 58
    print(f"{'contacts still booked (queued) at the resume call':{width}}{resume.booked:>10}")
    print(f"{'contacts the pause gave back (pending) at the resume call':{width}}{resume.given_back:>10}")
    print(f"{'instance next free slot, ahead of the resume call (s)':{width}}{resume.next_slot_ahead:>10.3f}")
    print(f"{'resume call (ms)':{width}}{resume.call_seconds * 1000:>10.0f}")
    kind = "booked before the pause" if resume.next_send_was_booked else "booked after the resume"
    print(f"{'resume answer -> next send (s)':{width}}{resume.next_send:>10.3f}  ({kind})")
    given_back = f"{resume.given_back_send:.3f}" if resume.given_back_send is not None else "none"
    print(f"{'resume answer -> first send of a given-back contact (s)':{width}}{given_back:>10}")


# --- the report ------------------------------------------------------------


def command_line() -> str:
    python = sys.executable
    with contextlib.suppress(ValueError):
        relative = os.path.relpath(python)
        if not relative.startswith(".."):
            python = relative
    return f"cd {shlex.quote(os.getcwd())} && {shlex.join([python, '-m', PROGRAM, *sys.argv[1:]])}"


def print_facts(*, pg_version: str, rabbit_version: str, load: tuple[float, float]) -> None:
    import dramatiq
    from dramatiq.worker import WORKER_TIMEOUT

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print("Pacing benchmark: the production stack's send pace and pause latency")
    print(f"command: {command_line()}")
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) | PostgreSQL {pg_version} | "
          f"RabbitMQ {rabbit_version} | dramatiq {dramatiq.__version__} | "
          f"CPUs: {os.cpu_count()} (usable by this process: {affinity}) | "
          f"load average (1 min) at start / end: {load[0]:.1f} / {load[1]:.1f}")
    print(f"stack: gunicorn 2 workers x 4 threads | dramatiq tasks {WORKER_PROCESSES} processes x {WORKER_THREADS} "
          f"threads | billing scheduler (recovery every {DEFAULT_RECOVERY_INTERVAL_SECONDS} s) | "
          f"dramatiq worker_timeout {WORKER_TIMEOUT} ms")


def progress(started: float, message: str) -> None:
    print(f"{PROGRAM} [{time.monotonic() - started:5.1f} s]: {message}", file=sys.stderr, flush=True)


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


class BrokerWatch:
    """Notes consumers of the vhost's queues beyond this stack's workers: another
    run's workers would take this run's messages, and the figures with them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.intruders: dict[str, int] = {}

    def check(self) -> None:
        for queue, count in broker_consumers(self.url).items():
            if count > WORKER_PROCESSES:
                self.intruders[queue] = max(self.intruders.get(queue, 0), count - WORKER_PROCESSES)


def stop_stack(stack: Stack) -> None:
    """SIGTERM every process at once; SIGKILL what is still running after
    STOP_GRACE_SECONDS (nothing of this run needs a graceful end: its
    database is dropped and its queues purged). Keeps the turn on the vhost
    (Stack.stop gives it up): the caller purges first."""
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in stack.processes.values():
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    for name, process in list(stack.processes.items()):
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        if process.poll() is None:
            print(f"{PROGRAM}: {name} still running {STOP_GRACE_SECONDS:g}s after SIGTERM; killed", file=sys.stderr)
        # SIGKILL for a survivor, and for children of a leader that is gone.
        stack.kill(name, signal.SIGKILL)


def main() -> None:
    started = time.monotonic()
    load_at_start = load_average()
    # A SIGTERM (a CI timeout) unwinds through the finally blocks below, so the
    # processes stop and the database is dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    server_url = os.environ.get(POSTGRES_URL_ENV, "").strip() or DEFAULT_POSTGRES_URL
    broker_url = os.environ.get(RABBITMQ_URL_ENV, "").strip() or DEFAULT_RABBITMQ_URL
    admin = admin_connection(server_url)
    try:
        rabbit_version = rabbitmq_version(broker_url)
        pg_version = server_version(admin)
        waited = claim_broker(broker_url)
        watch = BrokerWatch(broker_url)
        with tempfile.TemporaryDirectory(prefix=DATABASE_PREFIX) as workdir, \
                scratch_database(admin, server_url, prefix=DATABASE_PREFIX) as database_url:
            stack = Stack(
                # A throwaway encryption key: the scratch database's secrets die with it.
                kind="production", env={"DATABASE_URL": database_url, "BROKER_URL": broker_url,
                                        encryption.KEYS_SETTING: encryption.generate_key()},
                workdir=Path(workdir), worker_processes=WORKER_PROCESSES, worker_threads=WORKER_THREADS,
                # The production default, not the e2e tests' 2 s.
                extra_env={"RECOVERY_INTERVAL_SECONDS": DEFAULT_RECOVERY_INTERVAL_SECONDS},
            )
            try:
                progress(started, "starting the stack; tenants, templates, instances and keys with the CLI")
                stack.cli("db", "upgrade")
                senders = [(run.tenant, run.min_interval, run.max_interval) for run in ACCURACY_RUNS]
                senders += [(f"pause-{n}", PAUSE_INTERVAL, PAUSE_INTERVAL) for n in range(1, PAUSE_RUNS + 1)]
                # The CLI calls run one after the other (each is a fresh
                # interpreter: side by side on a small machine they only slow
                # each other down), while the stack boots.
                with ThreadPoolExecutor(1) as pool:
                    created = pool.submit(lambda: {tenant: create_sender(stack, tenant, min_interval=low, max_interval=high)
                                                   for tenant, low, high in senders})
                    stack.start()
                    wait_for_workers(stack, broker_url)
                    keys = created.result()
                accuracy = []
                for run in ACCURACY_RUNS:
                    progress(started, f"pacing run {run.tenant} ({ACCURACY_CONTACTS} contacts)")
                    accuracy.append(run_accuracy(stack, run, keys[run.tenant]))
                    watch.check()
                pauses = []
                for n in range(1, PAUSE_RUNS + 1):
                    progress(started, f"pause run {n}")
                    pauses.append(run_pause(stack, f"pause-{n}", keys[f"pause-{n}"], label=f"pause-{n}"))
                    watch.check()
                progress(started, "resume")
                resume = run_resume(stack, pauses[-1])
                watch.check()
                progress(started, "stopping the stack")
            except (BenchError, AssertionError) as exc:  # AssertionError: Stack's own checks
                print(stack.logs(), file=sys.stderr)
                raise SystemExit(f"{PROGRAM}: {first_line(exc)[:500]}") from None
            finally:
                stop_stack(stack)
                # Still this run's turn: what its workers left in the queues
                # (paused campaigns' delayed sends) must not reach another run.
                purge_rabbitmq(broker_url)
                stack.stop()  # nothing left to stop; gives up the turn on the vhost
    finally:
        release_broker(broker_url)
        admin.close()
    progress(started, "done")
    print_facts(pg_version=pg_version, rabbit_version=rabbit_version, load=(load_at_start, load_average()))
    if watch.intruders:
        print(f"WARNING: another run's workers consumed this RabbitMQ vhost during the benchmark {watch.intruders}: "
              "they may have taken messages of this run; the figures are not reliable")
    print()
    print_accuracy(accuracy)
    print()
    print_pauses(pauses, resume)
    print()
    print(f"whole benchmark: {time.monotonic() - started:.0f} s (stack start and stop, database created and dropped"
          + (f"; {waited:.0f} s of it waiting for another run to give up the RabbitMQ vhost)" if waited >= 1 else ")"))


if __name__ == "__main__":
    main()
