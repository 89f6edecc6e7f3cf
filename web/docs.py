"""The API's OpenAPI document and a docs page to read it.

``GET /docs`` is rendered on the server from the same document as
``GET /openapi.json``: one self-contained HTML page (inline styles, no script,
nothing fetched from anywhere), every value escaped.
"""
from __future__ import annotations

import json
from html import escape

from flask import Blueprint, Response, current_app, jsonify

from web import openapi

bp = Blueprint("docs", __name__)

#: Where the rendered page is kept on the app (``app.extensions``).
CACHE_KEY = "openapi_docs_html"

AUTH_TEXT = {
    "ApiKey": "API key in the X-Billing-API-Key header",
    "AdminBearer": "Authorization: Bearer &lt;admin token&gt;",
}

STYLE = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:1em 2em;color:#1d2330}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #dde3ea;padding-bottom:.2em;margin-top:2em}
section.op{border:1px solid #dde3ea;border-radius:6px;padding:.4em 1em 1em;margin:1.2em 0}
.method{display:inline-block;min-width:4.5em;text-align:center;border-radius:4px;color:#fff;font-weight:600;
padding:0 .4em;margin-right:.5em}
.get{background:#2f7d32}.post{background:#1e63b5}.patch{background:#8a5a00}.put{background:#6a3fb5}.delete{background:#b3261e}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
pre{background:#f5f7fa;border:1px solid #e3e7ee;border-radius:4px;padding:.6em;overflow:auto;max-height:28em}
.text{white-space:pre-wrap;font-family:inherit;font-size:inherit;background:none;border:0;padding:0;max-height:none}
table{border-collapse:collapse;width:100%;margin:.4em 0}
th,td{border:1px solid #e3e7ee;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f5f7fa}.muted{color:#5b6472}nav ul{columns:2}
"""


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(openapi.build(current_app))


@bp.get("/docs")
def docs_page():
    page = current_app.extensions.get(CACHE_KEY)
    if page is None:
        page = current_app.extensions[CACHE_KEY] = render(openapi.build(current_app))
    return Response(page, mimetype="text/html")


# --- rendering ----------------------------------------------------------------

def _pretty(value) -> str:
    return escape(json.dumps(value, indent=2, ensure_ascii=False))


def _compact(value) -> str:
    return escape(json.dumps(value, ensure_ascii=False))


def _ref_name(schema: dict) -> str | None:
    ref = schema.get("$ref", "") if isinstance(schema, dict) else ""
    return ref[len(openapi.COMPONENTS):] if ref.startswith(openapi.COMPONENTS) else None


def _schema_link(schema: dict) -> str:
    name = _ref_name(schema)
    if name:
        return f'<a href="#schema-{escape(name)}"><code>{escape(name)}</code></a>'
    return f"<code>{_compact(schema)}</code>"


def _schema_block(schema: dict, components: dict) -> str:
    """A body schema as formatted JSON: the named model's own schema (its
    nested models link to the Schemas section)."""
    name = _ref_name(schema)
    if name and name in components:
        return f"<p>{_schema_link(schema)}</p><pre>{_pretty(components[name])}</pre>"
    return f"<pre>{_pretty(schema)}</pre>"


def _auth(operation: dict) -> str:
    schemes = [name for requirement in operation.get("security", []) for name in requirement]
    if not schemes:
        return "none in a header (see the description)" if operation.get("description") else "none"
    return ", ".join(AUTH_TEXT.get(name, escape(name)) for name in schemes)


def _parameters(parameters: list[dict]) -> str:
    if not parameters:
        return ""
    rows = "".join(
        f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
        f"<td>{'yes' if p.get('required') else 'no'}</td><td><code>{_compact(p.get('schema', {}))}</code></td>"
        f"<td>{escape(p.get('description', ''))}</td></tr>"
        for p in parameters
    )
    return (
        "<h4>Parameters</h4><table><tr><th>Name</th><th>In</th><th>Required</th><th>Schema</th>"
        f"<th>Description</th></tr>{rows}</table>"
    )


def _responses(responses: dict) -> str:
    rows = []
    for status, answer in responses.items():
        schema = answer.get("content", {}).get(openapi.JSON, {}).get("schema")
        rows.append(
            f"<tr><td><code>{escape(status)}</code></td><td>{escape(answer.get('description', ''))}</td>"
            f"<td>{_schema_link(schema) if schema else ''}</td></tr>"
        )
    return (
        "<h4>Responses</h4><table><tr><th>Status</th><th>Meaning</th><th>Body</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _operation(method: str, path: str, op: dict, components: dict) -> str:
    parts = [
        f'<section class="op" id="op-{escape(op["operationId"])}">',
        f'<h3><span class="method {escape(method)}">{escape(method.upper())}</span><code>{escape(path)}</code></h3>',
        f"<p><strong>{escape(op.get('summary', ''))}</strong></p>",
    ]
    if op.get("description"):
        parts.append(f'<pre class="text">{escape(op["description"])}</pre>')
    parts.append(f"<p><strong>Auth:</strong> {_auth(op)}</p>")
    if op.get("x-aliases"):
        aliases = ", ".join(f"<code>{escape(a)}</code>" for a in op["x-aliases"])
        parts.append(f'<p class="muted">Also answers on {aliases}.</p>')
    parts.append(_parameters(op.get("parameters", [])))
    body = op.get("requestBody", {}).get("content", {}).get(openapi.JSON, {}).get("schema")
    if body:
        parts.append(f"<h4>Request body ({escape(openapi.JSON)})</h4>{_schema_block(body, components)}")
    parts.append(_responses(op.get("responses", {})))
    parts.append("</section>")
    return "\n".join(parts)


def render(document: dict) -> str:
    """The docs page of an OpenAPI document."""
    info = document.get("info", {})
    components = document.get("components", {}).get("schemas", {})
    operations = [
        (method, path, op) for path, item in document.get("paths", {}).items() for method, op in item.items()
    ]
    tags = [t["name"] for t in document.get("tags", [])]
    groups: dict[str, list] = {tag: [] for tag in tags}
    for entry in operations:
        groups.setdefault((entry[2].get("tags") or ["other"])[0], []).append(entry)

    nav = "".join(
        f'<li><a href="#op-{escape(op["operationId"])}">{escape(method.upper())} {escape(path)}</a></li>'
        for method, path, op in operations
    )
    body = []
    for tag, entries in groups.items():
        if not entries:
            continue
        description = next((t.get("description", "") for t in document.get("tags", []) if t["name"] == tag), "")
        body.append(f'<h2 id="tag-{escape(tag)}">{escape(tag)}</h2>')
        if description:
            body.append(f'<p class="muted">{escape(description)}</p>')
        body += [_operation(method, path, op, components) for method, path, op in entries]
    schemas = "\n".join(
        f'<h3 id="schema-{escape(name)}"><code>{escape(name)}</code></h3><pre>{_pretty(schema)}</pre>'
        for name, schema in components.items()
    )
    title = escape(info.get("title", "API"))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{title}</h1>
<p class="muted">Version {escape(info.get("version", ""))} &middot; OpenAPI {escape(document.get("openapi", ""))}
&middot; <a href="/openapi.json">openapi.json</a></p>
<pre class="text">{escape(info.get("description", ""))}</pre>
<nav><h2>Operations</h2><ul>{nav}</ul></nav>
{"".join(body)}
<h2 id="schemas">Schemas</h2>
{schemas}
</body>
</html>
"""
