"""Hostile input against every write route, on real SQLite and PostgreSQL
(issue 10, points 6 and 7): never a 5xx, every error a JSON body, and a
valid-looking write that is refused leaves nothing half-written.

The routes are read from the app's URL map, so a route added later is sent
the same table: the ERP API (with an API key), the admin API (with a tenant
admin's token, and with the operator's token plus X-Billing-Tenant) and the
gateways' webhooks (authenticated: the instance's secret, WAHA's bodies
signed). Every route gets whole bodies that are not what it reads (not JSON,
not UTF-8, nested 1,500 deep...), and every field of its body, nested ones
included, gets each hostile value of :data:`HOSTILE_VALUES` in an otherwise
valid body.

The tests after the table pin each rule down with its exact answer.
"""
from __future__ import annotations

import itertools
import json
import re
import socket
import time
from dataclasses import dataclass

import pytest

from billing import apikeys, campaigns, templates, tenants
from billing.adapters.db import database
from billing.adapters.models import (
    AdminToken,
    ApiKey,
    Campaign,
    Contact,
    Event,
    InboundMessage,
    Instance,
    OptOut,
    Queue,
    Template,
    Tenant,
    Variation,
)
from billing.bodies import MAX_JSON_DEPTH
from billing.config import Settings
from billing.domain.templating import MAX_MESSAGE_LENGTH
from tests.factories import LiveApp, RecordedJobs, contact, make_tenant, phones
from tests.fakes.evolution import upsert_body
from tests.fakes.waha import message_body, signature_headers
from web import create_app, openapi
from web.bodies import MAX_BODY_BYTES

OPERATOR_TOKEN = "operator-hostile-" + "z" * 30
#: The methods that write (a route answering only GET is read-only).
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
#: Few contacts per request, so the table's send bodies stay small.
MAX_CONTACTS = 20

#: Hostile values as JSON text (some have no Python literal: 1e400, NaN).
HOSTILE_VALUES = {
    "nul": '"a\\u0000b"',
    "lone surrogate": '"a\\ud800b"',
    "huge string": json.dumps("x" * 20_000),
    "string past a column": json.dumps("y" * 600),
    "huge integer": "1" + "0" * 400,
    "int64 overflow": str(2**63),
    "huge float": "1e400",
    "nan": "NaN",
    "negative": "-1",
    "zero": "0",
    "fraction": "1.5",
    "true": "true",
    "null": "null",
    "list": "[1, [2]]",
    "object": '{"a": {"b": null}}',
    "last date": '"9999-12-31"',
    "last moment": '"9999-12-31T23:59:59-01:00"',
    "nested past the limit": "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
}

#: Whole bodies that are not what any route reads.
HOSTILE_BODIES = {
    "not json": b"not json",
    "empty": b"",
    "not utf-8": b'{"name": "\xff\xfe"}',
    "truncated": b'{"name": "a',
    "nested objects 1,200 deep": b'{"a":' * 1_200 + b"1" + b"}" * 1_200,
    "nested arrays 1,500 deep": b"[" * 1_500 + b"]" * 1_500,
    "null": b"null",
    "array": b"[]",
    "text": b'"text"',
    "huge number": b"1e400",
    "nul in a key": b'{"\\u0000": 1}',
    "surrogate in a key": b'{"\\ud800": 1}',
}

_serial = itertools.count(1)

#: A value the table swaps for each hostile one.
_SLOT = "\x01hostile\x01"


@dataclass
class Env:
    client: object
    app: object
    setup: object
    api_headers: dict
    admin_headers: dict
    operator_headers: dict
    queue_id: str
    spare_key_id: int
    spare_token_id: int
    template_id: int
    evolution: Instance
    waha: Instance


@pytest.fixture
def env(db):
    app = create_app(Settings(database_url=db, admin_token=OPERATOR_TOKEN, max_contacts_per_request=MAX_CONTACTS),
                     jobs=RecordedJobs())
    setup = make_tenant("hostile")
    _, admin_token = apikeys.issue_admin_token(setup.tenant, name="table")
    spare_token, _ = apikeys.issue_admin_token(setup.tenant, name="spare")
    spare_key = apikeys.issue_key(setup.tenant, name="spare")
    template = templates.create_template(setup.tenant, type="overdue", name="spare", variations=["Olá {{nome}}"])
    # The sandbox instance sends; these two only receive webhooks.
    evolution = tenants.create_instance(setup.tenant, name="evo", provider="evolution", url="http://127.0.0.1:9", token="k")
    waha = tenants.create_instance(setup.tenant, name="default", provider="waha", url="http://127.0.0.1:9", token="k")
    created = campaigns.create_campaign(setup.tenant, template_type="overdue",
                                        request={"external_id": "seed", "contacts": [contact(p) for p in phones(2)]})
    yield Env(
        client=app.test_client(), app=app, setup=setup,
        api_headers={"X-Billing-API-Key": setup.api_key},
        admin_headers={"Authorization": f"Bearer {admin_token}"},
        operator_headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", "X-Billing-Tenant": setup.tenant.name},
        queue_id=created.queue_id, spare_key_id=spare_key.api_key.id,
        spare_token_id=spare_token.id, template_id=template.id,
        evolution=Instance.get_by_id(evolution.id), waha=Instance.get_by_id(waha.id),
    )


# --- the routes and their callers ---------------------------------------------------

@dataclass
class Route:
    """One write route as the table calls it."""

    rule: object
    method: str
    kind: str  # api, admin, webhook

    @property
    def label(self) -> str:
        return f"{self.method} {self.rule.rule}"


def write_routes(app) -> list[Route]:
    """Every route of ``app`` that writes, classified by who calls it; a write
    route of a kind the table does not know fails the test."""
    routes = []
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.split(".", 1)[0]
        kind = "api" if blueprint.startswith("api") else {"admin": "admin", "webhooks": "webhook"}.get(blueprint)
        for method in sorted(set(rule.methods or ()) & set(WRITE_METHODS)):
            assert kind is not None, f"{method} {rule.rule}: a write route the hostile-input table does not know"
            routes.append(Route(rule=rule, method=method, kind=kind))
    return routes


def _url(route: Route, env: Env, **override) -> str:
    """The route's URL with real ids: the caller's own queue, the spare key,
    token and template (DELETE may remove them), the webhook's instance and secret."""
    instance = _webhook_instance(route, env) if route.kind == "webhook" else env.setup.instance
    values = {
        "template_type": "overdue", "queue_id": env.queue_id, "key_id": env.spare_key_id,
        "token_id": env.spare_token_id, "template_id": env.template_id, "instance_id": instance.id,
        "secret": instance.webhook_secret, "event": "messages-upsert", **override,
    }
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: str(values.get(m.group(1), 1)), route.rule.rule)


def _webhook_instance(route: Route, env: Env) -> Instance:
    return env.waha if route.rule.rule.startswith("/webhooks/waha/") else env.evolution


def _callers(route: Route, env: Env) -> list[dict]:
    if route.kind == "api":
        return [env.api_headers]
    if route.kind == "admin":
        return [env.admin_headers, env.operator_headers]
    return [{}]


# --- the bodies -------------------------------------------------------------------------

def _valid_body(route: Route, env: Env) -> dict:
    """A body the route accepts (names made unique per request), or {} for a
    route the table has no example of: it still gets every documented field."""
    n = next(_serial)
    endpoint = route.rule.endpoint.split(".", 1)[1]
    if route.kind == "webhook":
        if route.rule.rule.startswith("/webhooks/waha/"):
            return message_body(session=env.waha.name, from_chat="5511987654321@c.us", text="Qual o pix?",
                                message_id=f"false_5511987654321@c.us_{n}")
        return upsert_body(instance=env.evolution.name, remote_jid="5511987654321@s.whatsapp.net", text="Qual o pix?",
                           message_id=f"3EB0{n:08d}")
    examples = {
        "send": {"external_id": f"hostile-{n}", "contacts": [contact(phones(1, start=n)[0])]},
        "queue_control": {"action": "pause", "reason": "hostile"},
        "create_key": {"name": f"key-{n}", "types": ["overdue"], "allowed_ips": ["10.0.0.0/8"]},
        "create_template": {"type": "overdue", "name": f"template-{n}", "variations": [{"text": "Olá {{nome}}", "weight": 2}]},
        "preview_template": {"text": "Olá {{nome}}", "variables": {"nome": "Ana"}},
        "update_template": {"name": f"renamed-{n}", "variations": ["Olá {{nome}}"]},
        "create_instance": {"name": f"instance-{n}", "provider": "sandbox", "messages_per_minute": 10},
        "update_instance": {"messages_per_minute": 10, "rest_every": 5},
        "update_settings": {"business_hours": "mon-fri 08:00-18:00", "extra_holidays": ["2030-01-02"], "daily_cap": 5},
        "create_tenant": {"name": f"tenant-{n}", "timezone": "America/Sao_Paulo"},
    }
    return examples.get(endpoint, {})


def _leaf_paths(value, path=()) -> list[tuple]:
    """The path of every value inside ``value`` that is not an object."""
    if isinstance(value, dict):
        return [p for key, child in value.items() for p in _leaf_paths(child, path + (key,))]
    if isinstance(value, list):
        return [p for index, child in enumerate(value) for p in _leaf_paths(child, path + (index,))] or [path]
    return [path]


def _documented_fields(document: dict, route: Route) -> set[str]:
    """The top-level fields of the route's documented body."""
    path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", route.rule.rule)
    operation = document["paths"].get(path, {}).get(route.method.lower(), {})
    schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return set(schema.get("properties", {}))


def _with(body: dict, path: tuple, raw: str) -> bytes:
    """``body`` as JSON text with the value at ``path`` replaced by the JSON text ``raw``."""
    copy = json.loads(json.dumps(body))
    target = copy
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = _SLOT
    return json.dumps(copy).replace(json.dumps(_SLOT), raw).encode()


def _headers(route: Route, env: Env, caller: dict, raw: bytes) -> dict:
    headers = {**caller, "Content-Type": "application/json"}
    if route.kind == "webhook" and route.rule.rule.startswith("/webhooks/waha/"):
        # Signed as WAHA signs, a new request id each time (signed event ids are de-duplicated).
        headers.update(signature_headers(raw, secret=env.waha.webhook_secret, request_id=f"evt_{next(_serial)}",
                                         timestamp_ms=int(time.time() * 1000)))
    return headers


# --- what must hold --------------------------------------------------------------------

#: Columns a refused request may still change: when a credential was last used.
VOLATILE = {"last_used_at", "last_used_ip"}


#: The tables a refused write must leave as they were.
WATCHED = (Tenant, ApiKey, AdminToken, Template, Variation, Instance, Campaign, Queue, Contact, Event, OptOut, InboundMessage)


def _state() -> tuple:
    """Every row of the watched tables, as stored (raw SQL: no decryption, no
    JSON decoding, and a secret written again shows as changed)."""
    state = []
    for model in WATCHED:
        meta = model._meta
        columns = ", ".join(f.column_name for f in meta.sorted_fields if f.name not in VOLATILE)
        sql = f"SELECT {columns} FROM {meta.table_name} ORDER BY {meta.primary_key.column_name}"
        state.append(database.execute_sql(sql).fetchall())
    return tuple(state)


class Findings:
    """Answers that break a rule, with what was sent."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.sent = 0

    def check(self, label: str, response, *, before=None) -> None:
        self.sent += 1
        status = response.status_code
        if status >= 500:
            self.items.append(f"{label} -> {status} {response.get_data(as_text=True)[:200]}")
        elif status >= 400 and not (response.is_json and response.json.get("success") is False and response.json.get("message")):
            self.items.append(f"{label} -> {status} is not a JSON error: {response.get_data()[:200]!r}")
        elif before is not None and status >= 400:
            after = _state()
            if after != before:
                changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
                self.items.append(f"{label} -> {status} but tables {changed} changed")

    def assert_none(self) -> None:
        assert not self.items, f"{len(self.items)} of {self.sent} answers broke a rule:\n" + "\n".join(self.items[:40])


def test_every_write_route_survives_the_hostile_table(env):
    document = openapi.build(env.app)
    routes = write_routes(env.app)
    kinds = {route.kind for route in routes}
    assert kinds == {"api", "admin", "webhook"}, kinds
    findings = Findings()
    for route in routes:
        for caller in _callers(route, env):
            who = "operator" if caller is env.operator_headers else "tenant admin" if caller is env.admin_headers else route.kind
            url = _url(route, env)
            for name, raw in HOSTILE_BODIES.items():
                response = env.client.open(url, method=route.method, data=raw, headers=_headers(route, env, caller, raw))
                findings.check(f"{route.label} as {who}: body {name}", response)
            base = _valid_body(route, env)
            paths = set(_leaf_paths(base)) | {(field,) for field in _documented_fields(document, route)}
            for path in sorted(paths, key=str):
                for name, value in HOSTILE_VALUES.items():
                    body = _valid_body(route, env) if base else {}
                    raw = _with(body, path, value)
                    # A webhook's refusal or success writes what it must: only the API and admin writes are watched.
                    before = _state() if route.kind != "webhook" and route.method != "DELETE" else None
                    response = env.client.open(url, method=route.method, data=raw, headers=_headers(route, env, caller, raw))
                    findings.check(f"{route.label} as {who}: {'.'.join(map(str, path))} = {name}", response, before=before)
    findings.assert_none()
    print(f"\nhostile table: {findings.sent} requests over {len(routes)} write routes, no 5xx")


@pytest.mark.parametrize("value", ["0", "-1", str(2**63), "1" + "0" * 30])
def test_zero_negative_and_huge_ids_on_every_write_route(env, value):
    findings = Findings()
    for route in write_routes(env.app):
        int_names = [name for name, converter in route.rule._converters.items() if "Integer" in type(converter).__name__]
        if not int_names:
            continue
        url = _url(route, env, **dict.fromkeys(int_names, value))
        for caller in _callers(route, env):
            response = env.client.open(url, method=route.method, json={}, headers=caller)
            findings.check(f"{route.label} {url}", response)
            assert response.status_code in (400, 401, 404, 405, 422), (url, response.status_code)
    findings.assert_none()


def test_hostile_query_values_on_every_read_route(env):
    document = openapi.build(env.app)
    findings = Findings()
    # As sent on the wire: %00 is a NUL, %ED%A0%80 the UTF-8 bytes of a lone surrogate.
    values = ["9999-12-31", "0001-01-01", "a%00b", "-1", "0", str(2**63), "1e400", "x" * 5_000, "%ED%A0%80", "%FF"]
    ids = {"queue_id": env.queue_id, "campaign_id": str(Campaign.get().id)}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            names = [p["name"] for p in operation.get("parameters", ()) if p["in"] == "query"]
            url = re.sub(r"{([^}]+)}", lambda m: str(ids.get(m.group(1), 1)), path)
            headers = env.api_headers if "/billing/" in path else env.admin_headers
            for name in names:
                for value in values:
                    response = env.client.open(f"{url}?{name}={value}", method=method.upper(), headers=headers)
                    findings.check(f"{method.upper()} {url}?{name}={value[:20]!r}", response)
    assert findings.sent > 20
    findings.assert_none()


# --- point 7, rule by rule ---------------------------------------------------------------

def test_a_body_that_is_not_json_is_400_and_one_that_does_not_validate_is_422(env):
    send = "/api/v1/billing/send/overdue"
    for url, headers in ((send, env.api_headers), ("/api/v1/admin/templates", env.admin_headers)):
        not_json = env.client.post(url, data="{oops", content_type="application/json", headers=headers)
        assert not_json.status_code == 400 and not_json.json["message"].startswith("the body must be JSON")
        form = env.client.post(url, data="a=b", content_type="application/x-www-form-urlencoded", headers=headers)
        assert form.status_code == 400
        assert env.client.post(url, json={"x": 1}, headers=headers).status_code == 422
    hook = f"/webhooks/evolution/{env.evolution.id}/{env.evolution.webhook_secret}"
    assert env.client.post(hook, data="{oops", content_type="application/json").status_code == 400
    assert env.client.post(hook, json=[]).json == {"success": True, "events": 0}  # JSON we do not understand: acknowledged


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_000, 100_000])
def test_deep_nesting_is_400_on_send_admin_and_webhooks(env, depth):
    deep = "[" * depth + "]" * depth
    send = json.dumps({"external_id": "deep", "contacts": [contact()], "metadata": {"a": _SLOT}}).replace(json.dumps(_SLOT), deep)
    answer = env.client.post("/api/v1/billing/send/overdue", data=send, content_type="application/json", headers=env.api_headers)
    assert answer.status_code == 400 and f"deeper than {MAX_JSON_DEPTH} levels" in answer.json["message"]
    assert Campaign.get_or_none(Campaign.external_id == "deep") is None
    admin = env.client.patch("/api/v1/admin/settings", data=f'{{"extra_holidays": {deep}}}', content_type="application/json",
                             headers=env.operator_headers)
    assert admin.status_code == 400
    raw = json.dumps(upsert_body(instance="evo", remote_jid="5511987654321@s.whatsapp.net", text=_SLOT)).replace(
        json.dumps(_SLOT), deep).encode()
    hook = env.client.post(f"/webhooks/evolution/{env.evolution.id}/{env.evolution.webhook_secret}", data=raw,
                           content_type="application/json")
    assert hook.status_code == 400
    waha = env.client.post(f"/webhooks/waha/{env.waha.id}", data=raw, headers=_headers(
        Route(rule=_rule(env.app, "/webhooks/waha/<int:instance_id>"), method="POST", kind="webhook"), env, {}, raw))
    assert waha.status_code == 400


def _rule(app, text: str):
    return next(rule for rule in app.url_map.iter_rules() if rule.rule == text)


def test_nesting_within_the_limit_is_kept(env):
    metadata = {"a": json.loads("[" * (MAX_JSON_DEPTH - 3) + "]" * (MAX_JSON_DEPTH - 3))}
    answer = env.client.post("/api/v1/billing/send/overdue", json={"external_id": "nested", "contacts": [contact()],
                                                                   "metadata": metadata}, headers=env.api_headers)
    assert answer.status_code == 200, answer.json
    assert Campaign.get(Campaign.external_id == "nested").metadata == metadata


@pytest.mark.parametrize("field, body", [
    ("external_id", {"external_id": "a\x00b", "contacts": [contact()]}),
    ("contacts.0.nome_cliente", {"external_id": "n1", "contacts": [contact(nome_cliente="Jo\x00ão")]}),
    ("contacts.1.fatura", {"external_id": "n2", "contacts": [contact(), contact(phones(1)[0], fatura="x\x00")]}),
    ("callback_url", {"external_id": "n3", "contacts": [contact()], "callback_url": "https://erp.example/\x00"}),
    ("metadata.pedido", {"external_id": "n4", "contacts": [contact()], "metadata": {"pedido": "\x00"}}),
    ("external_id", {"external_id": "a\ud800", "contacts": [contact()]}),
])
def test_nul_and_lone_surrogates_in_a_send_are_422_naming_the_field(env, field, body):
    raw = json.dumps(body).encode()  # ensure_ascii: the surrogate travels as \ud800
    answer = env.client.post("/api/v1/billing/send/overdue", data=raw, content_type="application/json", headers=env.api_headers)
    assert answer.status_code == 422, answer.json
    assert answer.json["errors"][0]["field"] == field
    if field.startswith("contacts."):
        assert answer.json["errors"][0]["index"] == int(field.split(".")[1])
    assert Campaign.select().count() == 1  # the seed's only: nothing half-written


@pytest.mark.parametrize("url, method, body, caller", [
    ("/api/v1/admin/templates", "POST", {"type": "overdue", "name": "n\x00", "variations": ["Olá"]}, "admin"),
    ("/api/v1/admin/templates", "POST", {"type": "overdue", "name": "n", "variations": ["Olá \x00"]}, "admin"),
    ("/api/v1/admin/api-keys", "POST", {"name": "k\x00"}, "admin"),
    ("/api/v1/admin/instances", "POST", {"name": "i\x00", "provider": "sandbox"}, "operator"),
    ("/api/v1/admin/settings", "PATCH", {"timezone": "America/Sao_Paulo\x00"}, "operator"),
    ("/api/v1/admin/tenants", "POST", {"name": "t\x00"}, "operator"),
])
def test_nul_in_admin_names_is_422_and_nothing_is_written(env, url, method, body, caller):
    headers = env.operator_headers if caller == "operator" else env.admin_headers
    before = _state()
    answer = env.client.open(url, method=method, json=body, headers=headers)
    assert answer.status_code == 422 and "NUL" in answer.json["message"], answer.json
    assert _state() == before


def test_business_hours_whose_normal_form_passes_the_column_are_422(env):
    # One-digit hours are 9 characters a window as typed, 11 once normalized: 497 become 595.
    typed = "mon-fri " + " ".join([f"0:{2 * i:02d}-0:{2 * i + 1:02d}" for i in range(30)]
                                  + [f"1:{2 * i:02d}-1:{2 * i + 1:02d}" for i in range(19)])
    assert len(typed) <= 500
    before = Tenant.get_by_id(env.setup.tenant.id).business_hours
    answer = env.client.patch("/api/v1/admin/settings", json={"business_hours": typed, "daily_cap": 7},
                              headers=env.admin_headers)
    assert answer.status_code == 422, answer.json
    assert answer.json["errors"] == [{"field": "business_hours",
                                      "message": "is longer than 500 characters once normalized (595)"}]
    tenant = Tenant.get_by_id(env.setup.tenant.id)
    assert (tenant.business_hours, tenant.daily_cap) == (before, 0)  # nothing half-written
    fits = env.client.patch("/api/v1/admin/settings", json={"business_hours": typed[:207]}, headers=env.admin_headers)
    assert fits.status_code == 200


@pytest.mark.parametrize("query", [
    "created_to=9999-12-31", "created_from=9999-12-31&created_to=9999-12-31", "created_from=0001-01-01",
])
def test_campaign_dates_at_the_end_of_the_calendar(env, query):
    answer = env.client.get(f"/api/v1/admin/campaigns?{query}", headers=env.admin_headers)
    assert answer.status_code == 200, answer.json
    assert answer.json["count"] == (0 if "created_from=9999" in query else 1)


@pytest.mark.parametrize("query, span", [
    ("to=9999-12-31", ("9999-12-02", "9999-12-31")),
    ("from=9999-12-31&to=9999-12-31", ("9999-12-31", "9999-12-31")),
    ("to=0001-01-05", ("0001-01-01", "0001-01-05")),
])
def test_stats_dates_at_the_ends_of_the_calendar(env, query, span):
    answer = env.client.get(f"/api/v1/admin/stats?{query}", headers=env.admin_headers)
    assert answer.status_code == 200, answer.json
    assert (answer.json["from"], answer.json["to"]) == span


@pytest.mark.parametrize("url, header, value", [
    ("/api/v1/admin/settings", "X-Billing-Tenant", "hostile\x00"),
    ("/api/v1/admin/settings", "Authorization", "Bearer a\x00b"),
    ("/api/v1/billing/send/overdue", "X-Billing-API-Key", "bk_a\x00b_c"),
    ("/api/v1/billing/send/overdue", "Idempotency-Key", "a\x00b"),
])
def test_nul_in_a_header_is_400_naming_it(env, url, header, value):
    headers = {**(env.operator_headers if "admin" in url else env.api_headers), header: value}
    answer = env.client.open(url, method="GET" if "admin" in url else "POST", json={"external_id": "h", "contacts": [contact()]},
                             headers=headers)
    assert (answer.status_code, answer.json["message"].lower()) == (400, f"header {header} must not contain nul characters".lower())
    assert Campaign.select().count() == 1


def test_nul_in_a_path_is_400(env):
    answer = env.client.post("/api/v1/billing/queue/a%00b/control", json={"action": "pause"}, headers=env.api_headers)
    assert (answer.status_code, answer.json["message"]) == (400, "the path must not contain NUL characters")


def test_nul_in_a_query_is_422(env):
    answer = env.client.get("/api/v1/admin/campaigns?external_id=a%00b", headers=env.admin_headers)
    assert answer.status_code == 422 and answer.json["errors"][0]["field"] == "external_id"


# --- webhooks: text stored cleaned, ids that cannot fit dropped --------------------------

def _evolution(env: Env, body: dict | bytes):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return env.client.post(f"/webhooks/evolution/{env.evolution.id}/{env.evolution.webhook_secret}", data=raw,
                           content_type="application/json")


def _waha(env: Env, body: dict):
    raw = json.dumps(body).encode()
    headers = signature_headers(raw, secret=env.waha.webhook_secret, request_id=f"evt_{next(_serial)}",
                                timestamp_ms=int(time.time() * 1000))
    return env.client.post(f"/webhooks/waha/{env.waha.id}", data=raw, headers={**headers, "Content-Type": "application/json"})


def test_webhook_text_with_nul_and_lone_surrogates_is_stored_cleaned(env):
    text = "pa\x00gar \ud800 amanhã \udfff"
    evolution = _evolution(env, upsert_body(instance="evo", remote_jid="5511987654321@s.whatsapp.net", text=text,
                                            message_id="3EB0CLEAN"))
    waha = _waha(env, message_body(session="default", from_chat="5511987654322@c.us", text=text,
                                   message_id="false_5511987654322@c.us_CLEAN"))
    assert (evolution.status_code, evolution.json) == (200, {"success": True, "events": 1})
    assert (waha.status_code, waha.json) == (200, {"success": True, "events": 1})
    stored = [m.text for m in InboundMessage.select().order_by(InboundMessage.id)]
    assert stored == ["pagar \ufffd amanhã \ufffd"] * 2


def test_webhook_ids_longer_than_their_columns_are_dropped_not_failed(env):
    long_id = _evolution(env, upsert_body(instance="evo", remote_jid="5511987654321@s.whatsapp.net", text="oi",
                                          message_id="3EB0" + "A" * 300))
    long_sender = _evolution(env, upsert_body(instance="evo", remote_jid="5" * 200 + "@s.whatsapp.net", text="oi",
                                              message_id="3EB0SHORT"))
    long_waha = _waha(env, message_body(session="default", from_chat="5511987654321@c.us", text="oi",
                                        message_id="false_" + "B" * 300))
    assert [r.status_code for r in (long_id, long_sender, long_waha)] == [200, 200, 200]
    assert InboundMessage.select().count() == 0
    fine = _evolution(env, upsert_body(instance="evo", remote_jid="5511987654321@s.whatsapp.net", text="oi",
                                       message_id="3EB0FINE"))
    assert fine.status_code == 200 and [m.provider_message_id for m in InboundMessage.select()] == ["3EB0FINE"]


def test_webhook_infinite_numbers_are_read_as_null(env):
    body = upsert_body(instance="evo", remote_jid="5511987654321@s.whatsapp.net", text="oi", message_id="3EB0NUM")
    body["data"]["messageTimestamp"] = _SLOT
    raw = json.dumps(body).replace(json.dumps(_SLOT), "1e400").encode()
    assert _evolution(env, raw).json == {"success": True, "events": 1}
    assert InboundMessage.get().provider_message_id == "3EB0NUM"


# --- point 6: work before a refusal is bounded ---------------------------------------------

def test_the_contact_limit_is_checked_before_any_contact_is_validated(env, monkeypatch):
    validated = []
    real_parse = campaigns.parse
    monkeypatch.setattr(campaigns, "parse", lambda *a, **k: validated.append(1) or real_parse(*a, **k))
    # Invalid contacts, one more than allowed: the count answers, not their validation.
    body = {"external_id": "many", "contacts": [{"telefone": ["not", "a", "phone"]}] * (MAX_CONTACTS + 1)}
    answer = env.client.post("/api/v1/billing/send/overdue", json=body, headers=env.api_headers)
    assert answer.status_code == 413 and answer.json["message"] == f"at most {MAX_CONTACTS} contacts per request, got 21"
    assert validated == []
    fewer = env.client.post("/api/v1/billing/send/overdue", json={**body, "contacts": body["contacts"][:2]},
                            headers=env.api_headers)
    assert fewer.status_code == 422 and validated == [1]


def test_a_preview_whose_rendering_passes_the_limit_is_422(env):
    body = {"text": "{{x}}" * 819, "variables": {"x": "a" * 250_000}}
    answer = env.client.post("/api/v1/admin/templates/preview", json=body, headers=env.admin_headers)
    assert answer.status_code == 422
    assert answer.json["message"] == f"the message would be longer than {MAX_MESSAGE_LENGTH} characters"
    assert len(answer.get_data()) < 1_000
    fits = env.client.post("/api/v1/admin/templates/preview", json={"text": "{{x}}" * 4, "variables": {"x": "a" * 4_000}},
                           headers=env.admin_headers)
    assert fits.status_code == 200 and len(fits.json["rendered"][0]["text"]) == 16_000


def test_a_contact_whose_message_passes_the_limit_is_rejected_alone(env):
    echo = templates.create_template(env.setup.tenant, type="notification", name="echo",
                                     variations=["{{mensagem}} {{mensagem}} {{mensagem}} {{mensagem}} {{mensagem}}"])
    long_text, short_text = "m" * 4_000, "curta"
    body = {"external_id": "echo", "contacts": [contact(phones(1, start=1)[0], mensagem=long_text, titulo="t"),
                                                contact(phones(1, start=2)[0], mensagem=short_text, titulo="t")]}
    answer = env.client.post("/api/v1/billing/send/notification", json=body, headers=env.api_headers)
    assert answer.status_code == 200, answer.json
    assert answer.json["rejected"] == [{"index": 0, "telefone": phones(1, start=1)[0],
                                        "reason": f"the message would be longer than {MAX_MESSAGE_LENGTH} characters"}]
    sent = Contact.get((Contact.queue == answer.json["queue_id"]) & (Contact.position == 1))
    assert sent.message == " ".join([short_text] * 5)
    assert Variation.get(Variation.template == echo.id).times_used == 1  # the rejected render is not counted


def _chunked(port: int, path: str, headers: dict, body: bytes, *, chunk: int = 1 << 20) -> tuple[int, dict]:
    """POST ``body`` with Transfer-Encoding: chunked (no Content-Length) over
    a real socket; returns the status and the JSON answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                     f"Connection: close\r\n{head}\r\n".encode())
        try:
            for start in range(0, len(body), chunk):
                part = body[start:start + chunk]
                sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server may answer and close before reading it all
            pass
        answer = b""
        while True:
            try:
                data = sock.recv(65_536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2] or b"null")


@pytest.fixture
def live(db):
    app = LiveApp(db)
    yield app
    app.close()


def test_a_chunked_body_over_the_limit_is_413(live):
    setup = make_tenant("chunked")
    headers = {"Content-Type": "application/json", "X-Billing-API-Key": setup.api_key}
    filler = b" " * (MAX_BODY_BYTES + 10)  # JSON may be padded: over the limit, and valid if it were read whole
    body = b'{"external_id": "big", "contacts": [' + json.dumps(contact()).encode() + b"]}" + filler
    status, answer = _chunked(live.server.server_port, "/api/v1/billing/send/overdue", headers, body)
    assert (status, answer["message"]) == (413, "request body too large")
    assert Campaign.get_or_none(Campaign.external_id == "big") is None
    small = b'{"external_id": "small", "contacts": [' + json.dumps(contact()).encode() + b"]}"
    status, answer = _chunked(live.server.server_port, "/api/v1/billing/send/overdue", headers, small)
    assert status == 200 and answer["total_contacts"] == 1  # a chunked body within the limit is read whole

