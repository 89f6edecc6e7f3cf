"""Ingest benchmark: how fast one send request turns 10,000 contacts into rows.

``POST /api/v1/billing/send/<type>`` validates the body with pydantic,
normalizes every phone, renders one message per contact and bulk-loads the
contacts with COPY in one transaction. The request is synchronous, so its
duration is what an ERP waits for, and contacts per second is the figure that
says whether a large batch fits in a caller's timeout. This prints:

a. the whole HTTP request through the Flask app (test client: no socket, but
   JSON parsing, auth, validation, rendering, bulk load, commit and the JSON
   response are all included);
b. ``billing.campaigns.create_campaign`` called with the already parsed dict:
   the service layer alone, so (a) - (b) is the web shim and JSON parsing;
c. a raw COPY of the very rows a send request wrote (the untimed warm-up
   request, same path and contacts as (a)), from a CSV buffer prepared before
   timing, with the same COPY statement the ingest runs (commit included).
   No Python work per row: the ceiling the ingest is compared with is the
   COPY into a scratch table ``LIKE contact INCLUDING DEFAULTS`` (no indexes,
   no foreign keys: LIKE never copies those). Two more targets show what the
   real table adds: a scratch table with ``contact``'s indexes, and
   ``contact`` itself (indexes, and foreign keys checked row by row: four of
   its five are set on every contact; the copies are deleted after each run,
   untimed);
d. the CPU-bound steps inside (b), each measured alone on the same contacts,
   so the reader sees where the time goes; what they leave of (b) is SQL,
   building the COPY buffer, the COPY itself and the commit.

Everything runs on a database created for this run and dropped after it, on
the PostgreSQL server named by BENCH_POSTGRES_URL. Each figure is the median of
RUNS runs. The runs are interleaved: round 1 times every step once, then round
2, and so on, so a burst of load from another process on a shared machine
lands on all figures alike instead of on whichever step ran at the time. Every
run of (a) and (b) creates a new campaign (a new external_id) in the same
database, which grows by one campaign each.

Run: ``make bench`` (or ``.venv/bin/python -m bench.ingest``).
"""
from __future__ import annotations

import gc
import io
import json
import os
import platform
import random
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import psycopg2
from psycopg2 import sql

from bench.postgres import redact, scratch_database, server_version
from billing.adapters import db as billing_db
from billing.adapters import encryption, migrations
from billing.adapters.models import Contact
from billing.campaigns import INSERT_FIELDS, create_campaign, template_variables
from billing.config import Settings
from billing.domain.duedates import today_in
from billing.domain.phones import normalize_phone
from billing.domain.templating import compile_template
from billing.schemas import SendRequest, parse
from billing.templates import active_template, active_variations
from tests.factories import RecordedJobs, make_tenant
from web import create_app
from web.auth import API_KEY_HEADER

#: Contacts in the benchmarked request: the most one request may carry.
CONTACTS = 10_000
#: Runs per figure; the median is printed, so one slow run (a checkpoint, a
#: noisy neighbour) does not move it.
RUNS = 3

#: The server the scratch database is created on.
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_URL_ENV = "BENCH_POSTGRES_URL"
CONNECT_TIMEOUT_SECONDS = 3
DATABASE_PREFIX = "bench_ingest_"

#: Overdue reminders are the bulk of real traffic, and their templates use
#: every field the contacts carry.
TEMPLATE_TYPE = "overdue"
SEND_PATH = f"/api/v1/billing/send/{TEMPLATE_TYPE}"

#: Fixed, so every run of the benchmark sends the same contacts.
SEED = 20_250_101

#: Area codes (DDD) of large Brazilian cities; real batches spread over many.
AREA_CODES = ("11", "21", "31", "41", "51", "61", "71", "81", "85", "19", "27", "48", "62", "92")
#: The ways ERPs write the same mobile; all of them take normalize_phone's
#: fast path once separators are removed.
PHONE_FORMATS: tuple[Callable[[str, str], str], ...] = (
    lambda ddd, sub: f"+55{ddd}{sub}",
    lambda ddd, sub: f"({ddd}) {sub[:5]}-{sub[5:]}",
    lambda ddd, sub: f"55{ddd}{sub}",
    lambda ddd, sub: f"{ddd} {sub}",
)
FIRST_NAMES = (
    "Ana", "Maria", "João", "José", "Francisco", "Antônio", "Luiz", "Paulo", "Carlos", "Lucas",
    "Juliana", "Fernanda", "Patrícia", "Aline", "Camila", "Bruno", "Rafael", "Márcia", "Gabriel", "Letícia",
)
LAST_NAMES = (
    "Silva", "Santos", "Oliveira", "Souza", "Rodrigues", "Ferreira", "Alves", "Pereira", "Lima", "Gomes",
    "Costa", "Ribeiro", "Martins", "Carvalho", "Araújo", "Melo", "Barbosa", "Conceição", "Assunção", "Nascimento",
)
#: Overdue bills are 1 to this many days late.
MAX_DAYS_OVERDUE = 90


@dataclass(frozen=True)
class Step:
    """Something to time once per round: ``run(round)`` returns its seconds."""

    label: str
    run: Callable[[int], float]
    items: int = CONTACTS


@dataclass(frozen=True)
class Figure:
    """One measured step: the durations of its runs, for ``items`` items each."""

    label: str
    durations: tuple[float, ...]
    items: int = CONTACTS

    @property
    def seconds(self) -> float:
        return statistics.median(self.durations)

    @property
    def ms(self) -> float:
        return self.seconds * 1000

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median: how far apart the runs were, so a
        reader can tell a real difference from noise."""
        return (max(self.durations) - min(self.durations)) / self.seconds

    @property
    def per_second(self) -> float:
        return self.items / self.seconds


# --- the request body ------------------------------------------------------


def brazilian_mobiles(count: int, rng: random.Random) -> list[str]:
    """``count`` distinct valid mobiles, written in the formats ERPs use."""
    seen: set[str] = set()
    phones: list[str] = []
    while len(phones) < count:
        ddd = rng.choice(AREA_CODES)
        # 9 then 6-9: the range every DDD has allocated to mobiles.
        subscriber = f"9{rng.randint(6, 9)}{rng.randrange(10_000_000):07d}"
        if ddd + subscriber in seen:
            continue
        seen.add(ddd + subscriber)
        phones.append(PHONE_FORMATS[len(phones) % len(PHONE_FORMATS)](ddd, subscriber))
    return phones


def _tlv(tag: str, value: str) -> str:
    return f"{tag}{len(value):02d}{value}"


def pix_code(rng: random.Random, *, amount: float, name: str, txid: str) -> str:
    """A PIX copy-and-paste code (EMV BR Code) of the usual length and shape.

    The CRC is random hex: nothing on the ingest path checks it.
    """
    key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    account = _tlv("00", "br.gov.bcb.pix") + _tlv("01", key)
    body = (
        _tlv("00", "01") + _tlv("26", account) + _tlv("52", "0000") + _tlv("53", "986")
        + _tlv("54", f"{amount:.2f}") + _tlv("58", "BR") + _tlv("59", name[:25].upper())
        + _tlv("60", "SAO PAULO") + _tlv("62", _tlv("05", txid[:25]))
    )
    return f"{body}6304{rng.getrandbits(16):04X}"


def build_contacts(count: int, *, today: date, rng: random.Random) -> list[dict]:
    """Contacts as an ERP sends them: every field the overdue templates use."""
    contacts = []
    for index, phone in enumerate(brazilian_mobiles(count, rng)):
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)} {rng.choice(LAST_NAMES)}"
        amount = round(rng.uniform(19.90, 4_999.99), 2)
        due = today - timedelta(days=rng.randint(1, MAX_DAYS_OVERDUE))
        invoice = f"FAT-{due.year}-{index + 1:06d}"
        contacts.append({
            "nome_cliente": name,
            "telefone": phone,
            "valor": amount,
            # Both accepted formats, as batches merged from two systems have.
            "data_vencimento": due.isoformat() if index % 2 == 0 else due.strftime("%d/%m/%Y"),
            "codigo_pix": pix_code(rng, amount=amount, name=name, txid=invoice.replace("-", "")),
            "link_pagamento": f"https://pagar.exemplo.com.br/f/{rng.getrandbits(64):016x}",
            "numero_fatura": invoice,
        })
    return contacts


def send_body(contacts: list[dict], external_id: str) -> dict:
    return {
        "external_id": external_id,
        "contacts": contacts,
        "callback_url": "https://erp.exemplo.com.br/webhooks/cobranca",
        "metadata": {"origem": "bench.ingest", "lote": external_id},
    }


def encode(body: dict) -> bytes:
    # UTF-8, not \u escapes: what ERPs send, and what Flask has to decode.
    return json.dumps(body, ensure_ascii=False).encode()


# --- timing ----------------------------------------------------------------


def timed(fn: Callable, *args, **kwargs) -> tuple[float, object]:
    """Run ``fn`` once; return (seconds, its result)."""
    # Collect the previous run's garbage now, so that collection is not
    # charged to this run.
    gc.collect()
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def seconds_of(fn: Callable[[], object]) -> Callable[[int], float]:
    """A step's ``run`` for work that needs nothing new per round."""
    return lambda _round: timed(fn)[0]


def run_rounds(steps: list[Step]) -> dict[str, Figure]:
    """Time every step once per round, RUNS rounds; figures by label."""
    durations: dict[str, list[float]] = {step.label: [] for step in steps}
    for round_ in range(RUNS):
        for step in steps:
            durations[step.label].append(step.run(round_))
    return {step.label: Figure(step.label, tuple(durations[step.label]), step.items) for step in steps}


# --- the database ----------------------------------------------------------




def admin_connection(server_url: str):
    """An autocommit connection to the server; exits with one line if unreachable."""
    try:
        conn = psycopg2.connect(server_url, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg2.OperationalError as exc:
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), "connection failed")
        raise SystemExit(f"bench.ingest: cannot connect to PostgreSQL at {redact(server_url)}: {reason}") from None
    conn.autocommit = True
    return conn






# --- a. the HTTP request ---------------------------------------------------

HTTP_LABEL = f"a. HTTP POST send/{TEMPLATE_TYPE} (Flask test client)"


def post_send(client, api_key: str, payload: bytes, *, expected: int) -> dict:
    """POST a send request; return its JSON, or fail unless ``expected`` contacts were accepted."""
    response = client.post(SEND_PATH, data=payload, content_type="application/json", headers={API_KEY_HEADER: api_key})
    reply = response.get_json(silent=True) or {}
    if response.status_code != 200 or reply.get("total_contacts") != expected:
        # Not a timing check: a partly rejected batch would make the figures
        # describe a smaller batch than they claim.
        raise RuntimeError(f"send request answered {response.status_code}: {response.get_data(as_text=True)[:300]}")
    return reply


def http_step(client, api_key: str, contacts: list[dict]) -> Step:
    def run(round_: int) -> float:
        payload = encode(send_body(contacts, f"bench-http-{round_}"))
        return timed(post_send, client, api_key, payload, expected=len(contacts))[0]

    return Step(HTTP_LABEL, run)


# --- b. the service layer --------------------------------------------------

SERVICE_LABEL = "b. create_campaign (service layer, parsed dict)"


def service_step(tenant, contacts: list[dict], max_contacts: int) -> Step:
    def run(round_: int) -> float:
        # Parsed from the same bytes the HTTP request sends, outside the timing.
        request = json.loads(encode(send_body(contacts, f"bench-service-{round_}")))
        billing_db.database.connect(reuse_if_open=True)
        try:
            return timed(
                create_campaign, tenant, template_type=TEMPLATE_TYPE, request=request, max_contacts=max_contacts
            )[0]
        finally:
            billing_db.database.close()

    return Step(SERVICE_LABEL, run)


# --- c. the raw COPY ceiling -----------------------------------------------

#: Where the raw COPY goes: (table, how to create it, label). The first is the
#: ceiling the ratios use; LIKE never copies foreign keys.
COPY_TARGETS = (
    ("bench_copy_plain", "INCLUDING DEFAULTS", "c. raw COPY: scratch LIKE contact, no indexes"),
    ("bench_copy_indexed", "INCLUDING DEFAULTS INCLUDING INDEXES", "   raw COPY: scratch with contact's 4 indexes"),
    ("contact", None, "   raw COPY: contact itself (indexes + FKs)"),
)


def copy_columns() -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(f.column_name) for f in INSERT_FIELDS)


def copy_statement(table: str) -> sql.Composed:
    """The ingest's own COPY statement (same columns, text format), into ``table``."""
    return sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), copy_columns())


def rows_as_csv(conn, queue_id: str) -> tuple[str, int]:
    """The columns the ingest loads, of every contact of one queue, in COPY's
    text format (what the ingest writes); and how many rows that is."""
    table = sql.Identifier(Contact._meta.table_name)
    query = sql.SQL("COPY (SELECT {} FROM {} WHERE queue_id = {} ORDER BY position) TO STDOUT").format(
        copy_columns(), table, sql.Literal(queue_id)
    )
    out = io.StringIO()
    with conn.cursor() as cur:
        cur.copy_expert(query.as_string(conn), out)
        cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE queue_id = %s").format(table), (queue_id,))
        count = cur.fetchone()[0]
    conn.commit()
    return out.getvalue(), count


def create_copy_target(conn, table: str, like_options: str | None) -> None:
    """Create a scratch table shaped like contact (None: use contact itself)."""
    if like_options is None:
        return
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE {} (LIKE {} " + like_options + ")").format(
            sql.Identifier(table), sql.Identifier(Contact._meta.table_name)))
    conn.commit()


def copy_step(conn, table: str, like_options: str | None, label: str, rows_csv: str, rows: int) -> Step:
    create_copy_target(conn, table, like_options)
    target = sql.Identifier(table)
    statement = copy_statement(table).as_string(conn)

    def load(buffer: io.StringIO) -> None:
        with conn.cursor() as cur:
            cur.copy_expert(statement, buffer)
        # Commit included: the ingest's figure includes its commit too.
        conn.commit()

    def run(_round: int) -> float:
        with conn.cursor() as cur:
            # contact also holds the campaigns (a) and (b) create between
            # rounds: remember where this run's copies start.
            cur.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(target))
            last_id = cur.fetchone()[0]
        conn.commit()
        seconds = timed(load, io.StringIO(rows_csv))[0]
        # Empty the target of this run's copies (untimed), so every run loads
        # into the same state and contact keeps only real campaigns.
        with conn.cursor() as cur:
            if like_options is None:
                cur.execute(sql.SQL("DELETE FROM {} WHERE id > %s").format(target), (last_id,))
            else:
                cur.execute(sql.SQL("TRUNCATE {}").format(target))
        conn.commit()
        return seconds

    return Step(label, run, items=rows)


# --- d. where the service layer's time goes --------------------------------

#: The one breakdown step that is in (a) but not in (b).
JSON_DECODING_LABEL = "JSON decoding of the body (json.loads; in a, not b)"


def breakdown_steps(tenant, contacts: list[dict]) -> list[Step]:
    """Each CPU-bound step of create_campaign alone, on the same contacts.

    Every step gets the previous step's output, computed here, untimed.
    """
    payload = encode(send_body(contacts, "bench-breakdown"))
    body = json.loads(payload)
    parsed = parse(SendRequest, body)
    dumped = [c.model_dump(exclude_none=True) for c in parsed.contacts]
    today = today_in(tenant.timezone)
    variables = [template_variables(d, today=today) for d in dumped]
    billing_db.database.connect(reuse_if_open=True)
    try:
        templates = [compile_template(v.text) for v in active_variations(active_template(tenant.id, TEMPLATE_TYPE))]
    finally:
        billing_db.database.close()

    return [
        Step(JSON_DECODING_LABEL, seconds_of(lambda: json.loads(payload))),
        Step("pydantic validation: parse(SendRequest, body)", seconds_of(lambda: parse(SendRequest, body))),
        Step("ContactIn.model_dump(exclude_none=True) x each",
             seconds_of(lambda: [c.model_dump(exclude_none=True) for c in parsed.contacts])),
        Step("normalize_phone x each", seconds_of(lambda: [normalize_phone(d["telefone"]) for d in dumped])),
        Step("template_variables x each (dates, R$)",
             seconds_of(lambda: [template_variables(d, today=today) for d in dumped])),
        # Round robin over the variations: the random picker spreads contacts
        # evenly, and every variation costs about the same to render.
        Step("Template.render x each (5 variations)",
             seconds_of(lambda: [templates[i % len(templates)].render(v) for i, v in enumerate(variables)])),
    ]


# --- the report ------------------------------------------------------------


def versions_line(pg_version: str) -> str:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}) | "
        f"PostgreSQL {pg_version} | CPUs: {os.cpu_count()} (usable by this process: {affinity})"
    )


def print_report(*, pg_version: str, figures: dict[str, Figure], copy_labels: list[str], part_labels: list[str]) -> None:
    http, service = figures[HTTP_LABEL], figures[SERVICE_LABEL]
    copies = [figures[label] for label in copy_labels]
    parts = [figures[label] for label in part_labels]
    ceiling = copies[0]
    width = 52
    print(f"Ingest benchmark: {CONTACTS:,} contacts in one request, median of {RUNS} interleaved runs")
    print(versions_line(pg_version))
    print()
    print(f"{'':{width}} {'ms':>8} {'rows/s':>8} {'vs COPY':>8} {'spread':>7}")
    for figure in (http, service, *copies):
        ratio = figure.per_second / ceiling.per_second * 100
        print(f"{figure.label:{width}} {figure.ms:8.1f} {figure.per_second:8,.0f} {ratio:7.1f}% {figure.spread * 100:6.0f}%")
    print()
    print(f"Where the time goes: each step alone, on the same {CONTACTS:,} contacts")
    print(f"{'':{width}} {'ms':>8} {'% of b':>8} {'spread':>7}")
    in_service = [p for p in parts if p.label != JSON_DECODING_LABEL]
    for figure in parts:
        share = f"{figure.seconds / service.seconds * 100:7.1f}%" if figure in in_service else ""
        print(f"{figure.label:{width}} {figure.ms:8.1f} {share:>8} {figure.spread * 100:6.0f}%")
    rest = service.seconds - sum(p.seconds for p in in_service)
    print(f"{'rest of b: SQL, COPY buffer, COPY, commit':{width}} {rest * 1000:8.1f} {rest / service.seconds * 100:7.1f}%")
    print(f"{'a - b: Flask, JSON decoding, auth, response':{width}} {(http.seconds - service.seconds) * 1000:8.1f}")
    print()
    print("vs COPY: rows/s as a share of the first COPY (the ceiling). spread: (slowest - fastest) / median")
    print("of the runs; a difference smaller than the spread is noise.")


def main() -> None:
    server_url = os.environ.get(POSTGRES_URL_ENV, "").strip() or DEFAULT_POSTGRES_URL
    admin = admin_connection(server_url)
    try:
        pg_version = server_version(admin)
        with scratch_database(admin, server_url, prefix=DATABASE_PREFIX) as url:
            # A throwaway key: the scratch database's secrets die with it.
            keys = (encryption.generate_key(),)
            encryption.install(keys)
            billing_db.connect(url)
            migrations.upgrade()
            setup = make_tenant("bench")
            billing_db.database.close()

            settings = Settings(database_url=url, encryption_keys=keys)
            # No broker: the queue's first dispatch is not part of the ingest.
            client = create_app(settings, jobs=RecordedJobs()).test_client()
            contacts = build_contacts(CONTACTS, today=today_in(setup.tenant.timezone), rng=random.Random(SEED))
            # An untimed full request first: the first request of a process
            # pays one-off costs (phonenumbers loads its metadata, templates
            # compile, the pool opens its connection), and its rows are the
            # ones the raw COPY loads.
            warmup = post_send(client, setup.api_key, encode(send_body(contacts, "bench-warmup")), expected=CONTACTS)

            conn = psycopg2.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS)
            try:
                rows_csv, rows = rows_as_csv(conn, warmup["queue_id"])
                copies = [copy_step(conn, table, like, label, rows_csv, rows) for table, like, label in COPY_TARGETS]
                parts = breakdown_steps(setup.tenant, contacts)
                steps = [
                    http_step(client, setup.api_key, contacts),
                    service_step(setup.tenant, contacts, settings.max_contacts_per_request),
                    *copies,
                    *parts,
                ]
                figures = run_rounds(steps)
            finally:
                conn.close()
    finally:
        admin.close()
    print_report(
        pg_version=pg_version,
        figures=figures,
        copy_labels=[step.label for step in copies],
        part_labels=[step.label for step in parts],
    )


if __name__ == "__main__":
    main()
