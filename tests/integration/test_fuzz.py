"""Schema-driven fuzzing: schemathesis generates requests from the app's own
OpenAPI document (valid and invalid ones, including methods a path does not
take) for every documented operation, and sends them in-process to the app on
a SQLite database with a real tenant and valid credentials, so they pass
authentication and reach validation and the handlers.

Admin operations are sent alternately with the tenant admin's token and with
the operator's token plus X-Billing-Tenant, so both reach every admin route.

For every answer: no 5xx; an error is JSON ``{success: false, message}``; the
status is one the document lists and the body matches the documented schema.
How many requests the fuzzer sends is checked (>= 1,000) by a test of its own,
which generates the same derandomized cases without sending them and prints
them per operation: ``pytest tests/integration/test_fuzz.py -q -s -k enough``.

BILLING_FUZZ_EXAMPLES sets the generated examples per operation (default: enough
for 1,200 requests over the documented operations, at least 15 each).

The tests at the end send, to every operation, the inputs that once answered
500 (ids and integers beyond the database's range, dates at the calendar's
edge), so those bugs stay fixed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import json
import logging
import math
import os
import re
import time
import zlib
from collections import Counter

import pytest
import schemathesis
import structlog
from flask import got_request_exception
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.generation.feedback import FeedbackSources
from schemathesis.pytest._test_builder import build_operation_test
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from billing import apikeys, tenants
from billing.adapters import db as billing_db
from billing.adapters import migrations
from billing.adapters.models import AdminToken, ApiKey, Tenant
from billing.config import Settings
from tests.factories import RecordedJobs, contact, make_tenant, phones
from web import create_app, openapi

MINIMUM_REQUESTS = 1_000
OPERATOR_TOKEN = "operator-fuzz-token"
HIGH_LIMIT = 1_000_000
#: Beyond any database integer (SQLite's and PostgreSQL's BIGINT are int64).
HUGE = 2**63
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _settings(url: str) -> Settings:
    # Failed authentications are not throttled here: generated credentials
    # would otherwise turn most requests into 429s after the first 20.
    wanted = {"database_url": url, "max_contacts_per_request": 20, "admin_token": OPERATOR_TOKEN,
              "failed_auth_limit": 0}
    names = {f.name for f in dataclasses.fields(Settings)}
    return Settings(**{k: v for k, v in wanted.items() if k in names})


#: The app under test. Built at import so that schemathesis makes one test per
#: documented operation at collection: routes added later are picked up, since
#: the document is generated from the URL map. The ``fuzz_env`` fixture binds
#: the database before any request, and checks that /openapi.json serves this
#: same document.
APP = create_app(_settings("sqlite:///:memory:"), jobs=RecordedJobs())
DOCUMENT = openapi.build(APP)
OPERATIONS = [(m, p) for p, item in DOCUMENT["paths"].items() for m in item]
EXAMPLES = int(os.environ.get("BILLING_FUZZ_EXAMPLES", 0)) or max(15, math.ceil(1_200 / max(1, len(OPERATIONS))))
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.app = APP

#: Hypothesis settings of the fuzz test, and of the count of the requests it
#: sends: derandomized, so both see the same cases.
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck),
)

#: Numbers the requests a worker sends, to make generated ids unique.
_serials = itertools.count()


@dataclasses.dataclass
class Env:
    api_key: str
    api_key_id: int
    admin_token: str
    tenant_name: str
    queue_id: str
    campaign_id: str
    evolution: object
    waha: object


@pytest.fixture(scope="module", autouse=True)
def quiet_logs():
    """Warnings and errors only, with plain tracebacks: unconfigured structlog
    renders an exception with rich (a schemathesis dependency) and its locals,
    about 10 s each, and an info line per request is noise here."""
    saved = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.format_exc_info,
                    structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/billing.sqlite3"
    billing_db.connect(url)
    migrations.upgrade()
    setup = make_tenant("fuzz", allow_private_callbacks=True)  # no DNS look-ups of generated callback URLs
    _lift_limits(setup.tenant)
    evolution = tenants.create_instance(setup.tenant, name="evo", provider="evolution", url="http://127.0.0.1:9", token="k")
    waha = tenants.create_instance(setup.tenant, name="default", provider="waha", url="http://127.0.0.1:9", token="k")
    admin_token = OPERATOR_TOKEN
    if hasattr(apikeys, "issue_admin_token"):
        admin_token = apikeys.issue_admin_token(setup.tenant, name="fuzz")[1]
    client = APP.test_client()
    assert client.get("/openapi.json").json == DOCUMENT  # what is fuzzed is what is served
    body = {"external_id": "fuzz-seed", "contacts": [contact(p) for p in phones(3)] + [contact("123")]}
    sent = client.post("/api/v1/billing/send/overdue", json=body, headers={"X-Billing-API-Key": setup.api_key})
    assert sent.status_code == 200, sent.json
    yield Env(
        api_key=setup.api_key, api_key_id=ApiKey.get(ApiKey.tenant == setup.tenant).id, admin_token=admin_token,
        tenant_name=setup.tenant.name, queue_id=sent.json["queue_id"], campaign_id=sent.json["billing_campaign_id"],
        evolution=evolution, waha=waha,
    )
    billing_db.database.close()


def _lift_limits(tenant) -> None:
    """The fuzzer sends far more than a key's default hourly allowance."""
    if hasattr(Tenant, "api_hourly_limit"):
        Tenant.update(api_hourly_limit=HIGH_LIMIT).where(Tenant.id == tenant.id).execute()


def _restore(env: Env) -> None:
    """The admin API may revoke the fuzzer's key or lower its limit: undo it so
    the next cases still reach the handlers."""
    ApiKey.update(revoked_at=None).where(ApiKey.id == env.api_key_id).execute()
    tenant = Tenant.get_or_none(Tenant.name == env.tenant_name)
    if tenant is not None:
        _lift_limits(tenant)
        AdminToken.update(revoked_at=None).where(AdminToken.tenant == tenant.id).execute()  # DELETE /admin-tokens/<id>


# --- building the requests --------------------------------------------------------

def _pick(value, share: int = 3) -> bool:
    """Deterministically true for about (share-1)/share of the values: used to
    swap generated values for real ones, so handlers run past their look-ups."""
    return zlib.crc32(repr(value).encode()) % share != 0


def _operation(method: str, path: str) -> dict:
    """The documented operation (the coverage phase also sends methods a path
    does not take: those get the path's first operation, for its credentials)."""
    item = DOCUMENT["paths"][path]
    return item.get(method.lower()) or next(iter(item.values()))


def _credentials(op: dict, env: Env, *, as_operator: bool = False) -> dict:
    """The headers that authenticate an operation, from its security schemes.

    Parameters:
      op: the documented operation.
      env: the tenant and its credentials.
      as_operator: send an admin operation with the operator's token and
        X-Billing-Tenant instead of the tenant admin's token (operator-only
        operations always are).
    """
    schemes = {name for requirement in op.get("security", []) for name in requirement}
    headers = {}
    if "ApiKey" in schemes:
        headers["X-Billing-API-Key"] = env.api_key
    if "AdminBearer" in schemes:
        if as_operator or "operator" in op.get("tags", ()) or env.admin_token == OPERATOR_TOKEN:
            headers["Authorization"] = f"Bearer {OPERATOR_TOKEN}"
            headers["X-Billing-Tenant"] = env.tenant_name
        else:
            headers["Authorization"] = f"Bearer {env.admin_token}"
    return headers


def _resolve(schema: dict) -> dict:
    ref = schema.get("$ref", "")
    return DOCUMENT["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else schema


def _types(schema: dict) -> set:
    schema = _resolve(schema)
    found = set(schema["type"] if isinstance(schema.get("type"), list) else [schema.get("type")])
    for branch in schema.get("anyOf", []) + schema.get("oneOf", []):
        found |= _types(branch)
    return found - {None}


def _body_properties(op: dict) -> dict:
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    return _resolve(body).get("properties", {}) if body else {}


def _integer_parameters(op: dict, where: str) -> set:
    return {p["name"] for p in op.get("parameters", ()) if p["in"] == where and "integer" in _types(p["schema"])}


#: How many cases of each admin operation were sent: they alternate between
#: the tenant admin's token and the operator's (with X-Billing-Tenant), so
#: every admin operation is fuzzed as both with no extra requests.
_admin_turns: Counter = Counter()


def _prepare(case, env: Env) -> dict:
    """Credentials and transport arguments for ``case``; on part of the cases,
    generated ids and phones are swapped for real ones."""
    op = _operation(case.method, case.operation.path)
    turn = _admin_turns[case.operation.label]
    _admin_turns[case.operation.label] += 1
    headers = _credentials(op, env, as_operator=turn % 2 == 1)
    serial = next(_serials)
    kwargs: dict = {}
    params = case.path_parameters or {}
    for name, real in (("queue_id", env.queue_id), ("campaign_id", env.campaign_id)):
        if name in params and _pick(params[name]):
            params[name] = real
    path, body = case.operation.path, case.body
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and key.strip() and len(key) <= 255 and _pick((key, serial)):
        # Generated keys repeat ("0", "000..."): most cases get a fresh one, the rest replay or meet a 422.
        case.headers["Idempotency-Key"] = f"{key[:200]}-{serial}"
    if path.endswith("/send/{template_type}") and isinstance(body, dict) and isinstance(body.get("contacts"), list):
        seed = zlib.crc32(repr(body).encode())
        if isinstance(body.get("external_id"), str) and body["external_id"].strip() and _pick(seed):
            # Hypothesis repeats small ids ("0"): most cases get a fresh one, the rest meet 409.
            body["external_id"] = f"{body['external_id'][:200]}-{serial}"
        # Random phones are almost never valid: most contacts get a real one and
        # the template's variables when missing (generated values are kept), so
        # campaigns get created and rendered, not only rejected.
        valid = phones(len(body["contacts"]), start=seed % 1_000_000)
        for index, (item, phone) in enumerate(zip(body["contacts"], valid)):
            if isinstance(item, dict) and _pick((seed, index), 4):
                item["telefone"] = phone
                for name, value in contact(phone).items():
                    item.setdefault(name, value)
    if path.startswith("/webhooks/evolution/") and _pick(params.get("instance_id")):
        params["instance_id"] = env.evolution.id
        if _pick(params.get("secret"), 2):
            params["secret"] = env.evolution.webhook_secret
    if path.startswith("/webhooks/waha/") and _pick(params.get("instance_id")):
        params["instance_id"] = env.waha.id
        raw = _raw_json(body)
        if raw is not None and _pick(raw, 4):
            kwargs["data"] = raw
            headers["Content-Type"] = "application/json"
            headers["X-Webhook-Hmac"] = hmac.new(env.waha.webhook_secret.encode(), raw, hashlib.sha512).hexdigest()
            headers["X-Webhook-Timestamp"] = str(int(time.time() * 1000))
    return {"headers": headers, **kwargs}


def _raw_json(body) -> bytes | None:
    """The bytes to sign for WAHA (None: no body, or not JSON)."""
    if isinstance(body, NotSet):
        return None
    if isinstance(body, bytes):
        return body
    try:
        return json.dumps(body).encode()
    except (TypeError, ValueError):
        return None


# --- the fuzz test ----------------------------------------------------------------

@schema.parametrize()
@FUZZ_SETTINGS
def test_every_generated_request_gets_a_sound_answer(case, fuzz_env):
    call = _prepare(case, fuzz_env)
    response = case.call(**call)
    label = f"{case.method} {case.operation.path}"
    if "AdminBearer" in str(_operation(case.method, case.operation.path).get("security")):
        _restore(fuzz_env)

    assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:300]}\n{case!r}"[:2000]
    if response.status_code >= 400:
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.startswith("application/json"), f"{response.status_code} as {content_type!r}"
        body = response.json()
        assert isinstance(body, dict) and body.get("success") is False, body
        assert isinstance(body.get("message"), str) and body["message"], body
    # The status is documented and the body matches its documented schema.
    case.validate_response(response, checks=CHECKS, headers=call["headers"])


def test_the_fuzzer_sends_enough_requests():
    """Build, for every operation, the Hypothesis test ``schema.parametrize``
    builds for the fuzz test, with the same settings, and count the cases it
    generates instead of sending them: the fuzz test sends one request per
    case, so this is its request count, whichever tests ran before or on which
    xdist worker."""
    generated = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        build_operation_test(config=schema.config, operation=operation, test_func=_case_counter(generated, operation.label),
                             given_kwargs={}, feedback=FeedbackSources())()
    total = sum(generated.values())
    print(f"\nfuzz: {total} requests ({EXAMPLES} examples per operation) over {len(OPERATIONS)} documented operations")
    for label, count in generated.most_common():
        print(f"  {count:5d}  {label}")
    assert set(generated) == {f"{method.upper()} {path}" for method, path in OPERATIONS}, "an operation is not fuzzed"
    assert total >= MINIMUM_REQUESTS
    # Admin operations alternate between the tenant admin's and the operator's token: two cases at least reach both.
    admin = [f"{m.upper()} {p}" for m, p in OPERATIONS if "AdminBearer" in str(_operation(m, p).get("security"))]
    assert admin and all(generated[label] >= 2 for label in admin), {label: generated[label] for label in admin}


def _case_counter(generated: Counter, label: str):
    """A test function with the fuzz test's settings that counts its cases in ``generated[label]``."""
    @FUZZ_SETTINGS
    def count(case):
        generated[label] += 1

    return count


# --- known product bugs (found by this fuzzer) --------------------------------------

class ServerErrors:
    """Collects the 5xx answers of requests sent through ``send``, with the exception behind each."""

    def __init__(self, env: Env) -> None:
        self.env, self.client, self.found = env, APP.test_client(), []

    def send(self, method: str, path: str, url: str, **kwargs):
        exceptions = []

        def record(sender, exception, **extra):
            exceptions.append(f"{type(exception).__name__}: {exception}")

        got_request_exception.connect(record, APP)
        try:
            response = self.client.open(url, method=method.upper(),
                                        headers=_credentials(_operation(method, path), self.env), **kwargs)
        finally:
            got_request_exception.disconnect(record, APP)
        if response.status_code >= 500:
            detail = f" {kwargs['json']}" if kwargs.get("json") else ""
            self.found.append(f"{method.upper()} {url}{detail} -> {response.status_code} {' '.join(exceptions)}")
        return response

    def check(self) -> None:
        assert not self.found, "\n".join(self.found)


def _url(path: str, values: dict) -> str:
    return re.sub(r"{([^}]+)}", lambda m: str(values.get(m.group(1), "x")), path)


def test_integer_ids_beyond_the_database_range_are_not_found(fuzz_env):
    errors = ServerErrors(fuzz_env)
    for method, path in OPERATIONS:
        names = _integer_parameters(_operation(method, path), "path")
        if names:
            errors.send(method, path, _url(path, dict.fromkeys(names, HUGE)), json={})
    errors.check()


def test_huge_integer_query_parameters_are_refused(fuzz_env):
    errors = ServerErrors(fuzz_env)
    ids = {"campaign_id": fuzz_env.campaign_id, "queue_id": fuzz_env.queue_id}
    for method, path in OPERATIONS:
        for name in _integer_parameters(_operation(method, path), "query"):
            errors.send(method, path, f"{_url(path, ids)}?{name}={HUGE - 1}")
    errors.check()


def test_huge_integers_in_bodies_are_refused(fuzz_env):
    errors = ServerErrors(fuzz_env)
    for method, path in OPERATIONS:
        op = _operation(method, path)
        for name, prop in _body_properties(op).items():
            if "integer" in _types(prop):
                errors.send(method, path, _url(path, {}), json={name: HUGE})
    errors.check()


def test_dates_at_the_edge_of_the_calendar_are_refused(fuzz_env):
    errors = ServerErrors(fuzz_env)
    for method, path in OPERATIONS:
        op = _operation(method, path)
        for name, prop in _body_properties(op).items():
            formats = {_resolve(prop).get("format")} | {b.get("format") for b in _resolve(prop).get("anyOf", [])}
            if "date-time" in formats:
                for value in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
                    errors.send(method, path, _url(path, {}), json={name: value})
    errors.check()
