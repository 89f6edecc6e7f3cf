"""The OpenAPI document and the docs page: a valid OpenAPI 3.1 document that
documents every route, whose request schemas are the pydantic models that
validate requests, and whose response schemas the real answers match (driven
through Flask's test client on real SQLite and PostgreSQL)."""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import time

import pytest
from jsonschema import Draft202012Validator

from billing import apikeys, tenants
from billing.adapters.models import ApiKey
from billing.config import Settings
from tests.factories import RecordedJobs, contact, make_tenant, phones
from web import create_app, docs, openapi

#: Routes that are not part of the API (the document itself, the docs page, probes).
UNDOCUMENTED = {"/openapi.json", "/docs", "/health"}

#: The operations that exist at least (more may be added: they are covered too).
MINIMUM = {
    ("post", "/api/v1/billing/send/{template_type}"),
    ("get", "/api/v1/billing/queue/{queue_id}/status"),
    ("post", "/api/v1/billing/queue/{queue_id}/control"),
    ("get", "/api/v1/billing/campaign/{campaign_id}/contacts"),
    ("post", "/webhooks/evolution/{instance_id}/{secret}"),
    ("post", "/webhooks/waha/{instance_id}"),
}
LEGACY = "/api/billing/v1/billing"


def _app(url: str, **settings):
    return create_app(Settings(database_url=url, **settings), jobs=RecordedJobs())


@pytest.fixture
def app(sqlite_db):
    return _app(sqlite_db)


@pytest.fixture
def document(app):
    return openapi.build(app)


def _api_rules(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule in UNDOCUMENTED:
            continue
        yield rule


def _operations(document):
    for path, item in document["paths"].items():
        for method, op in item.items():
            yield method, path, op


# --- the document ----------------------------------------------------------------

def test_the_document_is_valid_openapi_3_1(app, document):
    from openapi_spec_validator import OpenAPIV31SpecValidator, validate

    assert document["openapi"].startswith("3.1")
    validate(document, cls=OpenAPIV31SpecValidator)
    assert document["info"]["title"] and document["info"]["version"]
    assert LEGACY in document["info"]["description"]
    assert document["servers"] == [{"url": "/"}]
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "type": "apiKey", "in": "header", "name": "X-Billing-API-Key"}
    assert schemes["AdminBearer"]["type"] == "http" and schemes["AdminBearer"]["scheme"] == "bearer"
    ids = [op["operationId"] for _, _, op in _operations(document)]
    assert len(ids) == len(set(ids))
    # Every $ref points at a schema that exists.
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(document)))
    assert refs <= set(document["components"]["schemas"])


def test_the_served_document_is_the_built_one_and_is_cached(app, document):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.json == document
    assert app.extensions[openapi.CACHE_KEY] == document
    document["paths"].clear()  # a caller's copy: the cached document is untouched
    assert openapi.build(app)["paths"]


def test_every_route_is_documented(app, document):
    documented = {(m, p) for m, p, _ in _operations(document)}
    aliases = {(m, a) for m, _, op in _operations(document) for a in op.get("x-aliases", ())}
    assert MINIMUM <= documented
    missing = []
    for rule in _api_rules(app):
        view = app.view_functions[rule.endpoint]
        # The attribute must be on the function Flask calls (the auth wrapper),
        # i.e. @operation sits between the route decorator and the auth one.
        if not hasattr(view, openapi.OPERATION_ATTR):
            missing.append(f"{rule.rule} ({rule.endpoint}): no @operation on the registered view")
            continue
        for method in openapi.methods_of(rule):
            key = (method, openapi.openapi_path(rule))
            if key not in documented | aliases:
                missing.append(f"{method.upper()} {rule.rule}")
    assert not missing, "undocumented routes: " + ", ".join(missing)
    # The legacy prefix is documented once, as aliases of the current one.
    for method, path in MINIMUM:
        if path.startswith("/api/v1/billing"):
            op = document["paths"][path][method]
            assert op["x-aliases"] == [LEGACY + path[len("/api/v1/billing"):]]
    assert not any(p.startswith(LEGACY) for p in document["paths"])


def test_path_parameters_follow_the_converters_and_models(document):
    params = {
        (path, p["name"]): p["schema"]
        for _, path, op in _operations(document) for p in op.get("parameters", ()) if p["in"] == "path"
    }
    assert params[("/api/v1/billing/queue/{queue_id}/status", "queue_id")]["format"] == "uuid"
    assert params[("/api/v1/billing/campaign/{campaign_id}/contacts", "campaign_id")]["format"] == "uuid"
    assert params[("/api/v1/billing/send/{template_type}", "template_type")]["enum"] == [
        "overdue", "upcoming", "notification"
    ]
    assert params[("/webhooks/waha/{instance_id}", "instance_id")]["type"] == "integer"
    for path in {p for p, _ in params}:
        names = re.findall(r"{([^}]+)}", path)
        assert all((path, n) in params for n in names), path


def test_request_schemas_are_the_pydantic_schemas(app, document):
    components = document["components"]["schemas"]
    seen = set()
    for rule, spec in openapi.documented_rules(app):
        ops = [document["paths"][path][method] for method in openapi.methods_of(rule)
               if method in document["paths"].get(path := openapi.openapi_path(rule), {})]
        model = spec["body"]
        if model is not None and not isinstance(model, dict):
            expected = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in expected.pop("$defs", {}).items():
                assert components[name] == definition, f"{model.__name__}: $defs {name}"
            assert components[model.__name__] == expected, model.__name__
            for op in ops:
                assert op["requestBody"]["content"]["application/json"]["schema"] == {
                    "$ref": f"#/components/schemas/{model.__name__}"
                }
            seen.add(model.__name__)
        if spec["query"] is not None:
            expected_names = set(spec["query"].model_json_schema(by_alias=True)["properties"])
            for op in ops:
                assert {p["name"] for p in op.get("parameters", ()) if p["in"] == "query"} == expected_names
    assert {"SendRequest", "ControlRequest"} <= seen


# --- real answers against the documented schemas ------------------------------------

class Checker:
    """Validates answers against the document and records what was covered."""

    def __init__(self, document: dict) -> None:
        self.document = document
        self.covered: set[tuple[str, str, int]] = set()
        self.templates = [
            (method, path, re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(path)) + "/?$"))
            for method, path, _ in _operations(document)
        ]
        aliases = [
            (method, path, alias) for method, path, op in _operations(document) for alias in op.get("x-aliases", ())
        ]
        self.templates += [
            (method, path, re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(alias)) + "/?$"))
            for method, path, alias in aliases
        ]

    def operation(self, method: str, url: str) -> tuple[str, dict]:
        path = url.split("?")[0]
        for m, template, pattern in self.templates:
            if m == method and pattern.match(path):
                return template, self.document["paths"][template][m]
        raise AssertionError(f"{method.upper()} {url} matches no documented operation")

    def __call__(self, response, method: str, url: str):
        template, op = self.operation(method, url)
        status = str(response.status_code)
        answers = op["responses"]
        answer = answers.get(status) or answers.get(status[0] + "XX")
        assert answer is not None, f"{method.upper()} {template} answered {status}, not documented ({list(answers)})"
        assert response.mimetype == "application/json", response.data[:200]
        schema = answer["content"]["application/json"]["schema"]
        root = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                "components": self.document["components"], **schema}
        validator = Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)
        errors = sorted(validator.iter_errors(response.json), key=lambda e: list(e.path))
        assert not errors, (
            f"{method.upper()} {url} -> {status} does not match the documented schema:\n"
            + "\n".join(f"  {list(e.path)}: {e.message}" for e in errors[:10])
            + f"\n{json.dumps(response.json, ensure_ascii=False)[:1500]}"
        )
        self.covered.add((method, template, response.status_code))
        return response


@pytest.fixture
def api(db):
    app = _app(db, max_contacts_per_request=50)
    client = app.test_client()
    client.setup = make_tenant()
    client.headers = {"X-Billing-API-Key": client.setup.api_key}
    client.check = Checker(openapi.build(app))
    client.application = app
    return client


def _post(api, url, body=None, *, headers=None, **kwargs):
    headers = api.headers if headers is None else headers
    return api.check(api.post(url, json=body, headers=headers, **kwargs), "post", url)


def _get(api, url, *, headers=None):
    headers = api.headers if headers is None else headers
    return api.check(api.get(url, headers=headers), "get", url)


def test_real_answers_match_the_documented_schemas(api):
    base = "/api/v1/billing"
    good, bad = phones(3)[:2], "123"
    body = {"external_id": "doc-1", "contacts": [contact(good[0]), contact(good[1]), contact(bad)]}
    sent = _post(api, f"{base}/send/overdue", body)
    assert sent.status_code == 200 and sent.json["rejected_contacts"] == 1 and sent.json["rejected"]
    queue_id, campaign_id = sent.json["queue_id"], sent.json["billing_campaign_id"]

    # Errors of send: 409, 401, 403, 404, 413, 422 (structural and every contact rejected).
    again = _post(api, f"{base}/send/overdue", body)
    assert again.status_code == 409 and again.json["queue_id"] == queue_id
    assert _post(api, f"{base}/send/overdue", body, headers={}).status_code == 401
    assert _post(api, f"{base}/send/overdue", body, headers={"X-Billing-API-Key": "bk_x_y"}).status_code == 401
    limited = apikeys.issue_key(api.setup.tenant, name="upcoming only", types="upcoming")
    assert _post(api, f"{base}/send/overdue", {**body, "external_id": "doc-403"},
                 headers={"X-Billing-API-Key": limited.secret}).status_code == 403
    assert _post(api, f"{base}/send/other", body).status_code == 404
    many = {"external_id": "doc-big", "contacts": [contact(p) for p in phones(51, start=100)]}
    assert _post(api, f"{base}/send/overdue", many).status_code == 413
    invalid = _post(api, f"{base}/send/overdue", {"external_id": "doc-2", "contacts": [{"nome": 1}]})
    assert invalid.status_code == 422 and invalid.json["errors"][0]["field"]
    none_ok = _post(api, f"{base}/send/overdue", {"external_id": "doc-3", "contacts": [contact("1"), contact("2")]})
    assert none_ok.status_code == 422 and none_ok.json["errors"][0]["reason"]
    not_json = api.check(api.post(f"{base}/send/overdue", data="x", headers=api.headers), "post",
                         f"{base}/send/overdue")
    assert not_json.status_code == 400

    # An Idempotency-Key replays the first answer; reused with another request, it is a 422.
    once = {**api.headers, "Idempotency-Key": "doc-idem"}
    first = _post(api, f"{base}/send/overdue", {**body, "external_id": "doc-idem"}, headers=once)
    replay = _post(api, f"{base}/send/overdue", {**body, "external_id": "doc-idem"}, headers=once)
    assert replay.status_code == 200 and replay.json == first.json
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert _post(api, f"{base}/send/overdue", {**body, "external_id": "other"}, headers=once).status_code == 422

    # Status, on both prefixes.
    for prefix in (base, LEGACY):
        status = _get(api, f"{prefix}/queue/{queue_id}/status")
        assert status.status_code == 200 and status.json["total_contacts"] == 2
    assert _get(api, f"{base}/queue/00000000-0000-0000-0000-000000000000/status").status_code == 404
    assert _get(api, f"{base}/queue/not-a-uuid/status").status_code == 404

    # Control: pause, pause again, cancel, then a resume that conflicts.
    control = f"{base}/queue/{queue_id}/control"
    paused = _post(api, control, {"action": "pause", "reason": "docs"})
    assert paused.status_code == 200 and paused.json["changed"] is True and paused.json["status"] == "paused"
    assert _post(api, control, {"action": "pause"}).json["changed"] is False
    assert _post(api, control, {"action": "cancel"}).json["status"] == "cancelled"
    assert _post(api, control, {"action": "resume"}).status_code == 409
    assert _post(api, control, {"action": "explode"}).status_code == 422
    assert _post(api, f"{base}/queue/00000000-0000-0000-0000-000000000000/control", {"action": "pause"}).status_code == 404

    # Contacts, page by page and filtered.
    listing = f"{base}/campaign/{campaign_id}/contacts"
    page = _get(api, f"{listing}?page=1&page_size=2")
    assert page.status_code == 200 and page.json["count"] == 3 and len(page.json["results"]) == 2
    assert _get(api, f"{listing}?status=rejected").json["count"] == 1
    assert _get(api, f"{listing}?page_size=0").status_code == 422
    assert _get(api, f"{listing}?status=nope").status_code == 422
    assert _get(api, f"{base}/campaign/00000000-0000-0000-0000-000000000000/contacts").status_code == 404

    # 429, when the limits are in place: a key allowed one request an hour.
    if hasattr(ApiKey, "hourly_limit"):
        once = apikeys.issue_key(api.setup.tenant, name="once", hourly_limit=1)
        one = {"X-Billing-API-Key": once.secret}
        _get(api, f"{base}/queue/{queue_id}/status", headers=one)
        assert _get(api, f"{base}/queue/{queue_id}/status", headers=one).status_code == 429

    # 413 for a body above MAX_CONTENT_LENGTH (lowered here to keep the test light).
    api.application.config["MAX_CONTENT_LENGTH"] = 1_000
    huge = {"external_id": "doc-huge", "contacts": [contact(p) for p in phones(20, start=300)]}
    assert _post(api, f"{base}/send/overdue", huge).status_code == 413
    api.application.config["MAX_CONTENT_LENGTH"] = None

    _webhooks(api)

    covered = {(m, p) for m, p, status in api.check.covered if status < 300}
    assert MINIMUM <= covered, MINIMUM - covered
    errors = {status for *_, status in api.check.covered if status >= 400}
    assert {401, 403, 404, 409, 413, 422} <= errors


def _webhooks(api):
    tenant = api.setup.tenant
    evolution = tenants.create_instance(tenant, name="evo", provider="evolution", url="http://127.0.0.1:9", token="k")
    waha = tenants.create_instance(tenant, name="default", provider="waha", url="http://127.0.0.1:9", token="k")
    body = {"event": "connection.update", "instance": "evo", "data": {"state": "open"}}
    url = f"/webhooks/evolution/{evolution.id}/{evolution.webhook_secret}"
    ack = _post(api, url, body, headers={})
    assert ack.status_code == 200 and ack.json == {"success": True, "events": 1}
    assert _post(api, url, "not an object", headers={}).json == {"success": True, "events": 0}
    assert _post(api, f"/webhooks/evolution/{evolution.id}/wrong", body, headers={}).status_code == 401
    assert _post(api, f"/webhooks/evolution/{waha.id}/x", body, headers={}).status_code == 401

    raw = json.dumps({"event": "session.status", "session": "default", "payload": {"status": "WORKING"}}).encode()
    signature = hmac.new(waha.webhook_secret.encode(), raw, hashlib.sha512).hexdigest()
    url = f"/webhooks/waha/{waha.id}"
    headers = {"Content-Type": "application/json", "X-Webhook-Hmac": signature,
               "X-Webhook-Timestamp": str(int(time.time() * 1000))}
    ack = api.check(api.post(url, data=raw, headers=headers), "post", url)
    assert ack.status_code == 200 and ack.json["events"] == 1
    unsigned = api.check(api.post(url, data=raw, headers={"Content-Type": "application/json"}), "post", url)
    assert unsigned.status_code == 401
    assert _post(api, "/webhooks/waha/999999", {}, headers={}).status_code == 401


# --- the docs page ------------------------------------------------------------------

def test_the_docs_page_shows_every_operation(app, document):
    response = app.test_client().get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "<script" not in page.lower()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page), "the page must load nothing"
    for _method, path, op in _operations(document):
        assert f"<code>{docs.escape(path)}</code>" in page, path
        assert docs.escape(op["summary"]) in page
        assert f'id="op-{op["operationId"]}"' in page
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in page
    assert "X-Billing-API-Key" in page
    assert f"Also answers on <code>{LEGACY}/send/{{template_type}}</code>" in page


def test_the_docs_page_escapes_everything():
    hostile = "<script>alert('x')</script>"
    document = {
        "openapi": "3.1.0",
        "info": {"title": hostile, "version": hostile, "description": hostile},
        "tags": [{"name": hostile, "description": hostile}],
        "paths": {f"/x/{hostile}": {"post": {
            "operationId": hostile, "summary": hostile, "description": hostile, "tags": [hostile],
            "parameters": [{"name": hostile, "in": "query", "required": False, "schema": {"enum": [hostile]},
                            "description": hostile}],
            "requestBody": {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{hostile}"}}}},
            "responses": {"200": {"description": hostile, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{hostile}"}}}}},
            "security": [{hostile: []}], "x-aliases": [hostile],
        }}},
        "components": {"schemas": {hostile: {"description": hostile}}},
    }
    page = docs.render(document)
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
