"""A message type declared once works everywhere, on real SQLite and
PostgreSQL: a type declared by this test alone gets a default template, is
accepted by the admin API and the CLI, is listed in the OpenAPI document, is
sent through the shared send path by a key allowed every type (and refused to
a key with a subset), and has the business-hours and required-field rules of
its declaration. Migration 0003 turns the old comma-joined key scopes into
NULL (every type) or a JSON list."""
from __future__ import annotations

from datetime import datetime

import peewee
import pytest
from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

from billing import apikeys, windows
from billing.adapters import db as billing_db
from billing.adapters import migrations
from billing.adapters.models import ApiKey, Campaign, Contact, Template
from billing.config import Settings
from billing.domain.message_types import MESSAGE_TYPES, MessageType
from billing.domain.states import ContactStatus
from tests.conftest import postgres_database
from tests.factories import RecordedJobs, contact, make_tenant, phones
from tests.inprocess_support import Cli
from web import create_app, openapi

ADMIN = "/api/v1/admin"
OPERATOR = "op-" + "x" * 40

#: Declared by this test only: a receipt, sent at any hour, that needs the
#: amount received.
RECEIPT = MessageType(
    name="receipt",
    label="Recibo",
    hours_bound=False,
    due_date_rule=None,
    required_variables=("valor",),
    default_variations=("Olá {{nome_cliente}}, recebemos {{valor}}. Obrigado!",),
)

#: A Sunday at 06:00 in São Paulo: outside the default business hours.
SUNDAY_NIGHT_UTC = datetime(2026, 11, 29, 9, 0)


@pytest.fixture
def app(db):
    return create_app(Settings(database_url=db, admin_token=OPERATOR), jobs=RecordedJobs())


def _send(client, key: str, body: dict):
    return client.post(f"/api/v1/billing/send/{RECEIPT.name}", json=body, headers={"X-Billing-API-Key": key})


def test_a_type_declared_once_works_end_to_end(app, db, monkeypatch):
    client = app.test_client()
    setup = make_tenant(business_hours="mon-fri 08:00-18:00")  # its key, made now, may send every type
    monkeypatch.setitem(MESSAGE_TYPES, RECEIPT.name, RECEIPT)  # the whole declaration of a new type

    # a new tenant gets its default template
    newcomer = make_tenant("globex").tenant
    default = Template.get((Template.tenant == newcomer.id) & (Template.type == "receipt"))
    assert [v.text for v in default.variations] == list(RECEIPT.default_variations)

    # the OpenAPI document lists it wherever a type is taken
    document = openapi.build(app)
    send_params = document["paths"]["/api/v1/billing/send/{template_type}"]["post"]["parameters"]
    assert "receipt" in next(p for p in send_params if p["name"] == "template_type")["schema"]["enum"]
    assert "receipt" in document["components"]["schemas"]["TemplateCreate"]["properties"]["type"]["enum"]

    # the admin API validates templates and key scopes against the declaration
    _, token = apikeys.issue_admin_token(setup.tenant)
    auth = {"Authorization": f"Bearer {token}"}
    made = client.post(f"{ADMIN}/templates", headers=auth, json={
        "type": "receipt", "name": "curto", "variations": ["{{nome_cliente}}: {{valor}} recebido."]})
    assert made.status_code == 201 and made.json["type"] == "receipt"
    assert client.post(f"{ADMIN}/templates", headers=auth, json={
        "type": "invoice", "name": "x", "variations": ["x"]}).status_code == 422
    receipts_only = client.post(f"{ADMIN}/api-keys", headers=auth, json={"name": "recibos", "types": ["receipt"]})
    assert receipts_only.status_code == 201 and receipts_only.json["types"] == ["receipt"]
    listed = {k["name"]: k["types"] for k in client.get(f"{ADMIN}/api-keys", headers=auth).json["results"]}
    assert listed["test"] == ["overdue", "upcoming", "notification", "receipt"]  # NULL scope: every type

    # the key made before the type existed, with every type, sends it; the
    # required field is enforced whatever the template prints
    sent = _send(client, setup.api_key, {"external_id": "r1", "contacts": [
        contact(phones(1)[0], valor=89.9), {"nome_cliente": "Bia", "telefone": phones(1, start=1)[0]}]})
    assert sent.status_code == 200, sent.json
    assert [r["reason"] for r in sent.json["rejected"]] == ["missing variable 'valor'"]
    campaign = Campaign.get_by_id(sent.json["billing_campaign_id"])
    assert campaign.type == "receipt"
    accepted = Contact.get((Contact.campaign == campaign.id) & (Contact.status == ContactStatus.PENDING))
    assert accepted.message == "João Silva: R$ 89,90 recebido."
    assert _send(client, receipts_only.json["key"], {"external_id": "r2", "contacts": [contact(phones(1)[0])]}).status_code == 200

    # a key with a subset that lacks it is refused
    overdue_only = apikeys.issue_key(setup.tenant, name="cobranças", types=["overdue"])
    refused = _send(client, overdue_only.secret, {"external_id": "r3", "contacts": [contact(phones(1)[0])]})
    assert (refused.status_code, refused.json["message"]) == (403, "this API key may not send 'receipt' messages")

    # business hours bind only the types declared so
    assert windows.window_for(setup.tenant, "receipt", now=SUNDAY_NIGHT_UTC).open
    assert not windows.window_for(setup.tenant, "overdue", now=SUNDAY_NIGHT_UTC).open

    # the CLI offers it
    cli = Cli(database_url=db, monkeypatch=monkeypatch)
    assert "receipt" in cli("template", "create", "--help").stdout
    out = cli("template", "create", "--tenant", "acme", "--type", "receipt", "--name", "cli",
              "--variation", "Recebido: {{valor}}").stdout
    assert "cli (receipt, 1 variations" in out


def test_an_undeclared_type_is_not_found_on_the_send_path(app):
    setup = make_tenant()
    response = _send(app.test_client(), setup.api_key, {"external_id": "x", "contacts": [contact()]})
    assert response.status_code == 404
    assert response.json["message"] == "unknown message type 'receipt'; use overdue, upcoming, notification"


# --- migration 0003 ----------------------------------------------------------

#: Old ``template_types`` text -> the scope 0003 must store for it.
LEGACY_SCOPES = {
    "overdue,upcoming,notification": None,           # the old default: every type
    "notification,overdue,upcoming": None,           # the same set, written in another order
    "overdue": ["overdue"],
    "notification,overdue": ["notification", "overdue"],
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_database(request, tmp_path):
    """An empty database of each kind, bound, with no schema yet."""
    if request.param == "sqlite":
        billing_db.connect(f"sqlite:///{tmp_path}/billing.sqlite3")
        yield
        billing_db.database.close()
        return
    with postgres_database() as url:
        billing_db.connect(url)
        yield
        billing_db.database.close()


def _back_to_version_2(scopes: dict[str, str]) -> None:
    """Give ``api_key`` its shape before 0003 (the scope as comma-joined text,
    NOT NULL, with the old default) holding ``scopes`` (prefix -> text)."""
    database = billing_db.database
    migrator = PostgresqlMigrator(database) if billing_db.is_postgres() else SqliteMigrator(database)
    database.execute_sql(
        "ALTER TABLE api_key ADD COLUMN template_types VARCHAR(64) NOT NULL DEFAULT 'overdue,upcoming,notification'"
    )
    migrate(migrator.drop_column("api_key", "message_types"))
    legacy = peewee.Table("api_key", ("id", "prefix", "template_types")).bind(database)
    for prefix, text in scopes.items():
        legacy.update({legacy.template_types: text}).where(legacy.prefix == prefix).execute()
    migrations.SchemaMigration.delete().where(migrations.SchemaMigration.version == 3).execute()


def test_0003_converts_key_scopes_keeping_each_keys_types(fresh_database, monkeypatch):
    migrations.upgrade()
    tenant = make_tenant().tenant
    keys = {text: apikeys.issue_key(tenant, name=text).api_key.prefix for text in LEGACY_SCOPES}
    _back_to_version_2({prefix: text for text, prefix in keys.items()})

    assert [m.version for m in migrations.upgrade()] == [3]

    assert "template_types" not in {c.name for c in billing_db.database.get_columns("api_key")}
    stored = {k.name: k.message_types for k in ApiKey.select()}
    assert stored == {**LEGACY_SCOPES, "test": None}  # make_tenant's key had the column's old default
    migrations._0003_key_scopes()  # converted already: nothing to do, nothing lost
    assert {k.name: k.message_types for k in ApiKey.select()} == stored

    # a key that had every type also gets the types declared after it
    monkeypatch.setitem(MESSAGE_TYPES, RECEIPT.name, RECEIPT)
    by_name = {k.name: k for k in ApiKey.select()}
    assert "receipt" in by_name["overdue,upcoming,notification"].allowed_types
    assert by_name["notification,overdue"].allowed_types == ("notification", "overdue")
