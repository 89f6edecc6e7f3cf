"""The OpenAPI 3.1 document, generated from the routes and the same pydantic
schemas that validate the requests: there is no hand-written copy to drift.

A view declares what it takes and answers with :func:`operation`; :func:`build`
walks the app's URL map and assembles the document. To document a new route,
put ``@operation(...)`` between the route decorator and the auth decorator::

    @bp.post("/things/<int:thing_id>")
    @operation(summary="Change a thing", tags=("admin",), body=ThingPatch, response=ThingView,
               errors=(404, 422), auth="admin")
    @admin_required
    def update_thing(thing_id): ...

tests/integration/test_openapi.py fails for any route without it.
"""
from __future__ import annotations

import copy
import http
import importlib.metadata
import inspect
import re
from collections.abc import Callable
from typing import Any

from werkzeug.routing import Rule
from werkzeug.routing.converters import (
    AnyConverter,
    IntegerConverter,
    NumberConverter,
    PathConverter,
    UUIDConverter,
)

from billing.adapters.providers import PROVIDERS
from billing.bodies import MAX_JSON_DEPTH
from web.idempotency import IN_FLIGHT_TIMEOUT

#: Attribute under which :func:`operation` stores a view's description.
OPERATION_ATTR = "__openapi_operation__"

#: Where the built document is kept on the app (``app.extensions``).
CACHE_KEY = "openapi_document"

OPENAPI_VERSION = "3.1.0"
TITLE = "WhatsApp Billing API"
PACKAGE = "whatsapp-billing"
COMPONENTS = "#/components/schemas/"
REF_TEMPLATE = COMPONENTS + "{model}"
JSON = "application/json"

#: The values of ``operation(auth=...)`` and the security requirement of each.
AUTH_KINDS = {
    "api_key": [{"ApiKey": []}],
    "admin": [{"AdminBearer": []}],
    "webhook": [],
    "none": [],
}

#: Errors any operation of an auth kind may answer, added to its own ``errors``.
AUTH_ERRORS = {
    "api_key": (401, 403, 429),
    "admin": (401, 429),
    "webhook": (429,),
    "none": (),
}

#: Errors of every operation that reads the database (every auth kind but
#: ``none`` does, to authenticate): unreachable, or a schema not upgraded.
DATABASE_ERRORS = (503,)

#: Errors of every operation: a path or a header holding a NUL character
#: (web/bodies.py refuse_nul), refused before anything else.
REQUEST_ERRORS = (400,)

#: The header every authenticated POST of the ERP API takes (web/idempotency.py).
IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 255},
    "description": "Makes a retry safe: the same key with the same request replays the first answer "
    "(header Idempotent-Replayed: true); with another request it is a 422; while the first still runs, a 409. "
    f"A first request that died unanswered frees the key for the same request after "
    f"{int(IN_FLIGHT_TIMEOUT.total_seconds())} s. "
    "Keys are scoped to the API key and kept for a day.",
}

SECURITY_SCHEMES = {
    "ApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Billing-API-Key",
        "description": "The tenant's API key (`bk_...`). Every query is scoped to the key's tenant; requests are "
        "counted per key and hour (429 with Retry-After past the limit). Repeated failed authentications from one "
        "address answer 429 with Retry-After, a correct key included, until their window ends.",
    },
    "AdminBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <token>`: a tenant's admin token, or the operator's token "
        "(BILLING_ADMIN_TOKEN) together with `X-Billing-Tenant: <tenant name>` for the routes that act on one tenant. "
        "Repeated failed authentications from one address answer 429 with Retry-After, a correct token included, "
        "until their window ends.",
    },
}

#: What each error status means in this API (the Error body says the details).
ERROR_MEANINGS = {
    400: "The request is malformed: its body is not JSON (not UTF-8, not JSON, or nested deeper than "
    f"{MAX_JSON_DEPTH} levels), or its path or a header holds a NUL character.",
    401: "Missing, invalid, expired or revoked credentials.",
    403: "The credentials may not do this (template type not allowed, address not allowed, operator only).",
    404: "No such resource for this caller (another tenant's resources are not found either).",
    405: "Method not allowed.",
    409: "Conflict with the current state (an external_id already used: billing_campaign_id and queue_id name the "
    "existing campaign; a queue that cannot take this action now).",
    413: "The body or the number of contacts is above the limit.",
    415: "Unsupported media type.",
    422: "The body or a parameter does not validate; `errors` lists each problem.",
    429: "A rate limit was reached, or this address failed to authenticate too often; Retry-After says when to retry.",
    503: "The database is unreachable or its schema is not upgraded (`billing db upgrade`); Retry-After says when "
    "to retry. Work already saved is never answered with an error: a broker that is down does not fail a request.",
}

#: Where the texts below name the gateways, filled from the provider registry
#: when the document is built.
GATEWAYS = "{gateways}"

TAG_DESCRIPTIONS = {
    "billing": "The ERP-facing API: send reminders, follow and control their queues.",
    "webhooks": "Where the WhatsApp gateways ({gateways}) post their events.",
    "admin": "The tenant's administration: API keys, templates, instances, campaigns, settings, stats.",
    "operator": "The operator's administration of tenants.",
    "operations": "Probes for the process manager: liveness and readiness.",
}

DESCRIPTION = """Billing reminders over WhatsApp for Brazilian businesses: paced, business-hours aware, tracked end to end.

* **Authentication**: the ERP API takes the tenant's key in `X-Billing-API-Key`; the admin API takes
  `Authorization: Bearer <token>`; gateways' webhooks ({gateways}) are authenticated by the instance's secret
  in their URL, and by a signature of the body where the gateway sends one.
* **Errors** are always JSON: `{"success": false, "message": "...", "errors": [...]}`. A body that is not JSON
  is a 400; one that does not validate (text holding NUL characters or lone surrogates, numbers out of range
  included) is a 422 naming each field.
* **Legacy prefix**: every `/api/v1/billing/...` route also answers on `/api/billing/v1/billing/...` (the seed's
  prefix); each operation lists its aliases in `x-aliases`.
"""


def operation(
    *,
    summary: str,
    tags: tuple[str, ...] = (),
    body: type | dict | None = None,
    query: type | None = None,
    response: type | dict | None = None,
    errors: tuple[int, ...] = (),
    auth: str = "api_key",
    path: type | None = None,
    headers: type | None = None,
    status: int | None = None,
    description: str = "",
) -> Callable:
    """Describe a view for the OpenAPI document.

    Parameters:
      summary: one line for people.
      tags: groups in the docs page.
      body: the pydantic model of the JSON body (or a JSON Schema dict).
      query: a pydantic model whose fields are the query parameters.
      response: the pydantic model (or a JSON Schema dict) of the 2xx answer.
      errors: the error statuses the view may answer (JSON ``Error`` bodies);
        those of the auth kind (401...) and 413/422 for a body are added.
      auth: ``api_key`` (X-Billing-API-Key), ``admin`` (Bearer token),
        ``webhook`` (gateway secret) or ``none``.
      path: a pydantic model of the path parameters, when the URL converter
        says too little (a UUID in a plain ``<queue_id>``, an enum).
      headers: a pydantic model of header parameters (aliases are the names).
      status: the success status (default 200; ``2XX`` when no response is given).
      description: more text for people (default: the view's docstring).
    """
    if auth not in AUTH_KINDS:
        raise ValueError(f"auth must be one of {', '.join(AUTH_KINDS)}, got {auth!r}")

    def decorate(view: Callable) -> Callable:
        setattr(view, OPERATION_ATTR, {
            "summary": summary, "tags": tags, "body": body, "query": query, "response": response,
            "errors": errors, "auth": auth, "path": path, "headers": headers, "status": status,
            "description": description,
        })
        return view

    return decorate


# --- the document ---------------------------------------------------------------

def build(app: Any) -> dict:
    """The app's OpenAPI document (built once per app: routes do not change at
    run time). Returns a copy the caller may change."""
    document = app.extensions.get(CACHE_KEY)
    if document is None:
        document = app.extensions[CACHE_KEY] = _Builder(app).build()
    return copy.deepcopy(document)


def documented_rules(app: Any) -> list[tuple[Rule, dict]]:
    """The URL rules whose view carries an :func:`operation`, in registration order."""
    found = []
    for rule in app.url_map.iter_rules():
        spec = getattr(app.view_functions.get(rule.endpoint), OPERATION_ATTR, None)
        if spec is not None:
            found.append((rule, spec))
    return found


_ARGUMENT = re.compile(r"<(?:[a-zA-Z_][a-zA-Z0-9_]*(?:\([^)]*\))?:)?([a-zA-Z_][a-zA-Z0-9_]*)>")


def openapi_path(rule: Rule) -> str:
    """``/queue/<queue_id>/status`` -> ``/queue/{queue_id}/status``."""
    return _ARGUMENT.sub(r"{\1}", rule.rule)


def methods_of(rule: Rule) -> list[str]:
    return sorted(m.lower() for m in (rule.methods or ()) if m not in ("HEAD", "OPTIONS"))


def _version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
        return "0.0.0"


def _converter_schema(converter: Any) -> dict:
    if isinstance(converter, UUIDConverter):
        return {"type": "string", "format": "uuid"}
    if isinstance(converter, NumberConverter):
        schema: dict = {"type": "integer" if isinstance(converter, IntegerConverter) else "number"}
        if not converter.signed:
            schema["minimum"] = 0
        if converter.min is not None:
            schema["minimum"] = converter.min
        if converter.max is not None:
            schema["maximum"] = converter.max
        return schema
    if isinstance(converter, AnyConverter):
        return {"type": "string", "enum": sorted(converter.items)}
    if isinstance(converter, PathConverter):
        return {"type": "string", "minLength": 1}
    # The default (string) converter: one non-empty path segment.
    return {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}


def _without_null(schema: dict) -> dict:
    """A parameter is absent or has a value: drop the ``null`` branch of an Optional."""
    branches = schema.get("anyOf")
    if not branches:
        return schema
    kept = [b for b in branches if b != {"type": "null"}]
    if len(kept) == len(branches):
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    if len(kept) == 1:
        return {**kept[0], **rest}
    return {**rest, "anyOf": kept}


class _Builder:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.schemas: dict[str, dict] = {}
        self.operation_ids: set[str] = set()

    # components -------------------------------------------------------------

    def add_schema(self, name: str, schema: dict) -> None:
        known = self.schemas.get(name)
        if known is not None and known != schema:
            raise ValueError(
                f"two different schemas are named {name!r} in the OpenAPI document: rename one of the models"
            )
        self.schemas[name] = schema

    def model_schema(self, model: type | dict, *, mode: str) -> dict:
        """A ``$ref`` to the model's schema in components (its ``$defs`` hoisted
        there too), or a JSON Schema dict as given."""
        if isinstance(model, dict):
            return copy.deepcopy(model)
        schema = model.model_json_schema(ref_template=REF_TEMPLATE, mode=mode)
        for name, definition in schema.pop("$defs", {}).items():
            self.add_schema(name, definition)
        self.add_schema(model.__name__, schema)
        return {"$ref": COMPONENTS + model.__name__}

    def parameters(self, model: type | None, where: str) -> dict[str, dict]:
        """One parameter per field of ``model`` (by alias), keyed by name."""
        if model is None:
            return {}
        schema = model.model_json_schema(ref_template=REF_TEMPLATE, by_alias=True)
        for name, definition in schema.pop("$defs", {}).items():
            self.add_schema(name, definition)
        required = set(schema.get("required", ()))
        found = {}
        for name, prop in schema.get("properties", {}).items():
            prop = _without_null(dict(prop))
            prop.pop("title", None)
            if "default" in prop and prop["default"] is None:
                del prop["default"]
            description = prop.pop("description", "")
            parameter = {"name": name, "in": where, "required": where == "path" or name in required, "schema": prop}
            if description:
                parameter["description"] = description
            found[name] = parameter
        return found

    # operations -------------------------------------------------------------

    def operation_id(self, view: Callable) -> str:
        base = f"{view.__module__.rsplit('.', 1)[-1]}_{view.__name__}"
        candidate, n = base, 2
        while candidate in self.operation_ids:
            candidate, n = f"{base}_{n}", n + 1
        self.operation_ids.add(candidate)
        return candidate

    def path_parameters(self, rule: Rule, spec: dict) -> list[dict]:
        declared = self.parameters(spec["path"], "path")
        found = []
        for name in _ARGUMENT.findall(rule.rule):
            parameter = declared.get(name) or {
                "name": name, "in": "path", "required": True, "schema": _converter_schema(rule._converters[name]),
            }
            found.append(parameter)
        return found

    def responses(self, spec: dict, method: str, *, has_body: bool) -> dict:
        answers: dict[str, dict] = {}
        if spec["response"] is not None:
            answers[str(spec["status"] or 200)] = {
                "description": "Success.",
                "content": {JSON: {"schema": self.model_schema(spec["response"], mode="serialization")}},
            }
        else:
            answers[str(spec["status"] or "2XX")] = {
                "description": "Success: a JSON object with `success: true`.",
                "content": {JSON: {"schema": {"type": "object", "properties": {"success": {"const": True}}}}},
            }
        codes = set(spec["errors"]) | set(AUTH_ERRORS[spec["auth"]]) | set(REQUEST_ERRORS)
        if spec["auth"] != "none":
            codes |= set(DATABASE_ERRORS)
        if has_body:
            codes |= {400, 413, 422} if spec["auth"] != "webhook" else {400, 413}
        if spec["auth"] == "api_key" and method == "post":
            codes |= {409, 422}  # Idempotency-Key: still running, or reused with another request
        if codes:
            error = self.model_schema(_error_model(), mode="serialization")
            for code in sorted(codes):
                meaning = ERROR_MEANINGS.get(code) or http.HTTPStatus(code).phrase
                answers[str(code)] = {"description": meaning, "content": {JSON: {"schema": dict(error)}}}
        return answers

    def operation(self, rule: Rule, method: str, spec: dict, view: Callable) -> dict:
        doc: dict[str, Any] = {"operationId": self.operation_id(view), "summary": spec["summary"]}
        description = spec["description"] or inspect.getdoc(view) or ""
        if description:
            doc["description"] = description
        if spec["tags"]:
            doc["tags"] = list(spec["tags"])
        parameters = self.path_parameters(rule, spec)
        parameters += list(self.parameters(spec["query"], "query").values())
        parameters += list(self.parameters(spec["headers"], "header").values())
        if spec["auth"] == "api_key" and method == "post":
            parameters.append(copy.deepcopy(IDEMPOTENCY_HEADER))
        if parameters:
            doc["parameters"] = parameters
        if spec["body"] is not None:
            doc["requestBody"] = {
                "required": True,
                "content": {JSON: {"schema": self.model_schema(spec["body"], mode="validation")}},
            }
        doc["responses"] = self.responses(spec, method, has_body=spec["body"] is not None)
        doc["security"] = AUTH_KINDS[spec["auth"]]
        return doc

    def build(self) -> dict:
        paths: dict[str, dict] = {}
        # A view registered on several URLs (the legacy prefix) is documented
        # once, on the first; the others are listed in x-aliases.
        first_of: dict[tuple[int, str], dict] = {}
        tags: list[str] = []
        for rule, spec in documented_rules(self.app):
            view = self.app.view_functions[rule.endpoint]
            path = openapi_path(rule)
            for method in methods_of(rule):
                known = first_of.get((id(view), method))
                if known is not None:
                    if path != known["path"]:
                        known["doc"].setdefault("x-aliases", []).append(path)
                    continue
                doc = self.operation(rule, method, spec, view)
                paths.setdefault(path, {})[method] = doc
                first_of[(id(view), method)] = {"path": path, "doc": doc}
                tags += [t for t in spec["tags"] if t not in tags]
        return {
            "openapi": OPENAPI_VERSION,
            "info": {"title": TITLE, "version": _version(), "description": _with_gateways(DESCRIPTION)},
            "servers": [{"url": "/"}],
            "tags": [{"name": t, **({"description": _with_gateways(TAG_DESCRIPTIONS[t])} if t in TAG_DESCRIPTIONS else {})}
                     for t in tags],
            "paths": paths,
            "components": {"schemas": dict(sorted(self.schemas.items())), "securitySchemes": SECURITY_SCHEMES},
        }


def _with_gateways(text: str) -> str:
    """``text`` naming the registered gateways that post webhooks where it says ``{gateways}``."""
    return text.replace(GATEWAYS, ", ".join(p.label for p in PROVIDERS.values() if p.webhook is not None))


def _error_model() -> type:
    from web.responses import Error

    return Error
