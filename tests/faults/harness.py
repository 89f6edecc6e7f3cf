"""One fault scenario's run: a tenant on the fake gateway, campaigns posted
over HTTP, progress read from the database, and the figures the suite
reports (contacts, sent, failed, lost, duplicates, seconds from the fault's
end to completion).

Definitions:

* final: ``sent`` (or ``delivered``/``read``) or ``failed``; anything else
  (pending, queued, sending, or a status the product may add) is not.
* lost: a contact that is not final when the figures are taken (60 s after
  the fault's end; also shown apart as ``open``), or failed without a
  reason, or ``sent`` although the gateway never accepted its message.
* duplicates: messages the fake gateway accepted for a phone beyond the first.
"""
from __future__ import annotations

import collections
import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg2

from tests.e2e.stack import postgres_rows
from tests.factories import phones
from tests.fakes import digits
from tests.faults.gateway import FaultyEvolution
from tests.faults.procfile import ProcfileStack

TENANT = "faults"
GATEWAY_KEY = "faults-evolution-key"
#: Evolution instances of the tenant (one fake server serves them all).
INSTANCES = ("evo1", "evo2", "evo3", "evo4")
#: Gap between two messages of one instance: 0.05-0.08 s, ~15 messages/s
#: each, ~60/s for the four: 2,000 contacts in about 40 s without a fault on
#: a 2-core machine (35 s of pace, plus start-up and the machine's limits).
MIN_INTERVAL, MAX_INTERVAL = 0.05, 0.08
CAMPAIGN_SIZE = 2_000
#: The fault is injected once this fraction of the campaign is final.
FAULT_AT = 0.30
#: Every contact must be final this long after the fault's end.
FINAL_WITHIN = 60.0
#: How long the campaign may take to reach FAULT_AT (boot included).
PROGRESS_TIMEOUT = 90.0
POLL_SECONDS = 0.25

SENT = ("sent", "delivered", "read")
FAILED = "failed"
FINAL = (*SENT, FAILED)

_external_ids = itertools.count(1)


@dataclass
class Campaign:
    external_id: str
    phones: list[str]
    campaign_id: str = ""
    queue_id: str = ""
    http_status: int | None = None
    http_error: str = ""
    http_seconds: float = 0.0


@dataclass
class Figures:
    """What one scenario prints and writes."""

    scenario: str
    contacts: int = 0
    sent: int = 0
    failed: int = 0
    lost: int = 0
    open: int = 0  # of the lost: not final yet (pending, queued, sending...) when measured
    duplicates: int = 0
    seconds: float | None = None  # from the fault's end to every contact final (None: not within the limit)
    duplicate_bound: int = 0
    passed: bool = False
    details: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        seconds = f"{self.seconds:.1f}" if self.seconds is not None else f">{FINAL_WITHIN:g}"
        extra = " ".join(f"{k}={v}" for k, v in self.details.items())
        return (f"[faults] {self.scenario}: {'PASS' if self.passed else 'FAIL'} contacts={self.contacts} "
                f"sent={self.sent} failed={self.failed} lost={self.lost} (open {self.open}) duplicates={self.duplicates} "
                f"(allowed {self.duplicate_bound}) seconds_to_final={seconds} {extra}")


class FaultRun:
    """A started stack, the fake gateway and a tenant, for one scenario."""

    def __init__(self, *, name: str, stack: ProcfileStack, gateway: FaultyEvolution, database_url: str,
                 workdir: Path, started: float | None = None) -> None:
        self.name = name
        self.stack = stack
        self.gateway = gateway
        self.database_url = database_url
        self.workdir = workdir
        self.key = ""
        self.campaigns: list[Campaign] = []
        self.fault_started: float | None = None
        self.fault_ended: float | None = None
        self.started = started or time.monotonic()
        self.posted_at: float | None = None
        self._tracked: dict[str, tuple[list[int], float]] = {}
        self.figures = Figures(scenario=name)

    # --- set-up ----------------------------------------------------------------
    def create_tenant(self) -> None:
        """Through the CLI, as an operator does: open at all hours, no
        holidays, a notification template, four Evolution instances at a
        fast pace, an API key."""
        self.stack.cli("tenant", "create", TENANT, "--business-hours", "always", "--holidays", "none")
        calls = [(
            "template", "create", "--tenant", TENANT, "--type", "notification", "--name", "aviso",
            "--strategy", "sequential",
            "--variation", "Olá {{nome_cliente}}, aviso {{numero_fatura}}: {{mensagem}}",
            "--variation", "{{nome_cliente}}, um aviso ({{numero_fatura}}): {{mensagem}}",
        )] + [(
            "instance", "create", "--tenant", TENANT, "--provider", "evolution", "--name", name,
            "--url", self.gateway.url, "--token", GATEWAY_KEY,
            "--min-interval", str(MIN_INTERVAL), "--max-interval", str(MAX_INTERVAL),
            "--messages-per-minute", str(round(120 / (MIN_INTERVAL + MAX_INTERVAL), 2)),
        ) for name in INSTANCES] + [("apikey", "create", "--tenant", TENANT)]
        # Independent commands: run side by side (each is a Python start-up).
        with ThreadPoolExecutor(len(calls)) as pool:
            outputs = list(pool.map(lambda args: self.stack.cli(*args), calls))
        self.key = outputs[-1].strip().splitlines()[-1]
        # No "typing..." before each message: it holds a worker thread 1.2 s
        # per send (the CLI has no flag for instance options).
        updated = self.sql("UPDATE instance SET options = %s WHERE tenant_id = (SELECT id FROM tenant WHERE name = %s) "
                           "RETURNING id", ('{"typing_ms": 0}', TENANT))
        assert len(updated) == len(INSTANCES)

    # --- database --------------------------------------------------------------
    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        return postgres_rows(self.database_url, query, params, connect_timeout=3)

    def try_sql(self, query: str, params: tuple = ()) -> list[tuple] | None:
        """None while the database cannot be reached (its outage)."""
        try:
            return self.sql(query, params)
        except psycopg2.Error:
            return None

    # --- campaigns -------------------------------------------------------------
    def new_campaign(self, count: int, *, start: int = 0) -> Campaign:
        return Campaign(external_id=f"faults-{self.name}-{next(_external_ids)}", phones=phones(count, start=start))

    def body(self, campaign: Campaign) -> dict:
        return {
            "external_id": campaign.external_id,
            "contacts": [{"nome_cliente": f"Cliente {i}", "telefone": phone, "numero_fatura": f"NF-{i}",
                          "mensagem": "sua fatura está disponível"} for i, phone in enumerate(campaign.phones)],
        }

    def post(self, campaign: Campaign, *, timeout: float = 60) -> Campaign:
        """POST the campaign; records the answer (a 500 or no answer included)."""
        began = time.monotonic()
        self.posted_at = self.posted_at or began
        self.campaigns.append(campaign)
        try:
            response = self.stack.post("send/notification", self.body(campaign), key=self.key, timeout=timeout)
        except Exception as exc:  # the answer never came: recorded, judged by the scenario
            campaign.http_error = f"{type(exc).__name__}: {exc}"
        else:
            campaign.http_status = response.status_code
            if response.status_code == 200:
                created = response.json()
                campaign.campaign_id, campaign.queue_id = created["billing_campaign_id"], created["queue_id"]
            else:
                campaign.http_error = response.text[:300]
        campaign.http_seconds = time.monotonic() - began
        return campaign

    def find_ids(self, campaign: Campaign) -> bool:
        """The campaign's ids from the database (a POST answered with an
        error may still have saved it)."""
        if campaign.campaign_id:
            return True
        rows = self.try_sql("SELECT c.id, q.id FROM campaign c JOIN queue q ON q.campaign_id = c.id "
                            "WHERE c.external_id = %s", (campaign.external_id,))
        if rows:
            campaign.campaign_id, campaign.queue_id = str(rows[0][0]), str(rows[0][1])
            return True
        return False

    def counts(self, campaigns: list[Campaign] | None = None) -> dict[str, int] | None:
        """Contacts per status over the campaigns (None: database unreachable)."""
        ids = [c.campaign_id for c in (campaigns or self.campaigns) if c.campaign_id]
        if not ids:
            return {}
        rows = self.try_sql("SELECT status, count(*) FROM contact WHERE campaign_id::text = ANY(%s) GROUP BY status",
                            (ids,))
        return None if rows is None else dict(rows)

    def wait_until_final_fraction(self, campaign: Campaign, fraction: float = FAULT_AT, *,
                                  timeout: float = PROGRESS_TIMEOUT, fail: bool = True) -> dict[str, int] | None:
        """Wait until ``fraction`` of the campaign is final; returns the counts
        then (None when it did not happen in ``timeout`` and ``fail`` is False)."""
        deadline = time.monotonic() + timeout
        wanted = int(len(campaign.phones) * fraction)
        while True:
            self.check_tracked()
            counts = self.counts([campaign]) or {}
            if sum(counts.get(s, 0) for s in FINAL) >= wanted:
                return counts
            if time.monotonic() >= deadline:
                if not fail:
                    return None
                raise AssertionError(f"{fraction:.0%} of the campaign never became final in {timeout:g}s "
                                     f"(before any fault): {counts}\n{self.stack.logs()}")
            time.sleep(POLL_SECONDS)

    # --- sends in flight ---------------------------------------------------------
    def sending_ids(self) -> list[int]:
        """Contacts claimed right now (status ``sending``)."""
        return [row[0] for row in self.try_sql("SELECT id FROM contact WHERE status = 'sending'") or []]

    def track(self, label: str, ids: list[int]) -> None:
        """Note when every one of ``ids`` is final: ``<label>_final_after`` (seconds from now)."""
        self._tracked[label] = (ids, time.monotonic())
        self.check_tracked()

    def check_tracked(self) -> None:
        for label, (ids, since) in list(self._tracked.items()):
            rows = self.try_sql("SELECT count(*) FROM contact WHERE id = ANY(%s) AND status = ANY(%s)",
                                (ids, list(FINAL))) if ids else [(0,)]
            if rows is not None and rows[0][0] == len(ids):
                self.figures.details[f"{label}_final_after"] = round(time.monotonic() - since, 1)
                del self._tracked[label]

    def fault_begins(self) -> None:
        self.fault_started = time.monotonic()
        if self.posted_at is not None:
            self.figures.details["setup_seconds"] = round(self.posted_at - self.started, 1)
            self.figures.details["post_to_fault_seconds"] = round(self.fault_started - self.posted_at, 1)

    def fault_ends(self) -> None:
        self.fault_ended = time.monotonic()

    def wait_all_final(self, *, within: float = FINAL_WITHIN) -> float | None:
        """Seconds from the fault's end until every contact of every campaign
        is final, or None if that did not happen within ``within`` seconds."""
        assert self.fault_ended is not None
        deadline = self.fault_ended + within
        while True:
            for campaign in self.campaigns:
                self.find_ids(campaign)
            expected = sum(len(c.phones) for c in self.campaigns if c.campaign_id)
            self.check_tracked()
            counts = self.counts()
            if counts is not None and expected and sum(counts.get(s, 0) for s in FINAL) == expected \
                    and sum(counts.values()) == expected:
                return max(0.0, time.monotonic() - self.fault_ended)
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_SECONDS)

    # --- figures ---------------------------------------------------------------
    def measure(self, *, seconds: float | None, duplicate_bound: int) -> Figures:
        """Fill the figures from the database and the gateway's counts."""
        figures = self.figures
        figures.seconds = seconds
        figures.duplicate_bound = duplicate_bound
        accepted = self.gateway.accepted
        statuses: collections.Counter = collections.Counter()
        failed_but_received = 0
        for campaign in self.campaigns:
            if not self.find_ids(campaign):
                # Never saved: every one of its contacts is lost.
                figures.contacts += len(campaign.phones)
                figures.lost += len(campaign.phones)
                figures.problems.append(f"campaign {campaign.external_id} was not saved "
                                        f"(HTTP {campaign.http_status} {campaign.http_error[:120]})")
                continue
            rows = self.sql("SELECT phone, status, reason FROM contact WHERE campaign_id::text = %s",
                            (campaign.campaign_id,))
            figures.contacts += len(rows)
            if len(rows) != len(campaign.phones):
                figures.problems.append(f"campaign {campaign.external_id}: {len(rows)} contacts stored "
                                        f"of {len(campaign.phones)} posted")
            for phone, status, reason in rows:
                statuses[status] += 1
                received = accepted.get(digits(phone), 0)
                figures.duplicates += max(0, received - 1)
                if status in SENT:
                    figures.sent += 1
                    figures.lost += received == 0
                elif status == FAILED:
                    figures.failed += 1
                    figures.lost += not (reason or "").strip()
                    failed_but_received += received > 0
                else:
                    figures.lost += 1
                    figures.open += 1
        figures.details.update({
            "statuses": dict(statuses),
            "failed_but_received": failed_but_received,
            "gateway_accepted": sum(accepted.values()),
            "gateway_500": self.gateway.injected_500,
            "gateway_hung": self.gateway.hung,
            "fault_seconds": round((self.fault_ended or 0) - (self.fault_started or 0), 1),
            "run_seconds": round(time.monotonic() - self.started, 1),
        })
        for label in self._tracked:  # still open when measured
            figures.details[f"{label}_final_after"] = None
        if seconds is None:
            figures.problems.append(f"not every contact final within {FINAL_WITHIN:g}s of the fault's end: "
                                    f"{dict(statuses)}")
        if figures.lost:
            figures.problems.append(f"{figures.lost} contacts lost ({figures.open} of them not final yet)")
        if figures.duplicates > duplicate_bound:
            figures.problems.append(f"{figures.duplicates} duplicates (at most {duplicate_bound} allowed)")
        return figures

    def finish(self, report_path: Path) -> Figures:
        """Decide, print the scenario's line and write its JSON."""
        figures = self.figures
        figures.passed = not figures.problems
        print("\n" + figures.line(), flush=True)
        for problem in figures.problems:
            print(f"[faults] {figures.scenario}:   - {problem}", flush=True)
        report_path.write_text(json.dumps(asdict(figures), indent=2, default=str))
        return figures
