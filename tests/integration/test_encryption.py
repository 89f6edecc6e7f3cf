"""Secrets at rest (issue 10, point 8): gateway tokens, webhook secrets and
callback secrets are stored encrypted, on SQLite and PostgreSQL; the API and
the CLI still show and use them; key rotation, migration 4 over plaintext
rows, the SQLite files' modes, and the errors of a missing or wrong key."""
from __future__ import annotations

import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor

import peewee
import pytest
from cryptography.fernet import Fernet, InvalidToken

from billing import tenants
from billing.adapters import db as billing_db
from billing.adapters import encryption, migrations
from billing.adapters.db import database, is_postgres
from billing.adapters.models import Instance, Tenant
from billing.config import Settings
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.factories import admin_client, make_tenant
from tests.inprocess_support import Cli, one_error_line

OPERATOR = "operator-token"
ADMIN = "/api/v1/admin"
GATEWAY_TOKEN = "gateway-api-key-0123456789"
KEY_A, KEY_B = Fernet.generate_key().decode(), Fernet.generate_key().decode()

#: Every encrypted column, as (model, field name).
SECRET_COLUMNS = ((Tenant, "callback_secret"), (Instance, "token"), (Instance, "webhook_secret"))


@pytest.fixture
def keys():
    """Install other keys in this process for a test; the suite's key after it."""
    yield encryption.install
    encryption.install((TEST_ENCRYPTION_KEY,))


def _raw(model, name: str, row_id: int) -> str:
    """What the database holds, read past the field's decryption."""
    column = model._meta.fields[name].column_name
    return database.execute_sql(f'SELECT "{column}" FROM "{model._meta.table_name}" WHERE id = {int(row_id)}').fetchone()[0]


def _stored(instance: Instance) -> dict:
    """Every secret of the instance and its tenant, raw, by (table, column)."""
    return {(model._meta.table_name, name): _raw(model, name, instance.tenant_id if model is Tenant else instance.id)
            for model, name in SECRET_COLUMNS}


def _plain(instance: Instance) -> dict:
    """Every secret of the instance and its tenant, as the models read them."""
    fresh = Instance.get_by_id(instance.id)
    tenant = Tenant.get_by_id(instance.tenant_id)
    return {("tenant", "callback_secret"): tenant.callback_secret, ("instance", "token"): fresh.token,
            ("instance", "webhook_secret"): fresh.webhook_secret}


def _tenant_with_token() -> Instance:
    setup = make_tenant()
    return tenants.create_instance(setup.tenant, name="gw", provider="sandbox", token=GATEWAY_TOKEN)


def _opens_with(key: str, stored: str) -> bool:
    try:
        Fernet(key.encode()).decrypt(stored.removeprefix(encryption.ENCRYPTED_PREFIX).encode())
    except InvalidToken:
        return False
    return True


def test_the_api_stores_every_secret_encrypted_and_shows_it_in_the_clear(db):
    client = admin_client(db, operator_token=OPERATOR)
    created = client.post(f"{ADMIN}/instances", json={"name": "gw", "provider": "sandbox", "token": GATEWAY_TOKEN},
                          headers=client.auth)
    assert created.status_code == 201, created.json
    assert created.json["token_set"] is True
    instance = Instance.get(Instance.name == "gw")
    plain = _plain(instance)
    assert plain[("instance", "token")] == GATEWAY_TOKEN
    assert plain[("tenant", "callback_secret")].startswith("whsec_") and plain[("instance", "webhook_secret")]
    for column, stored in _stored(instance).items():
        assert stored.startswith(encryption.ENCRYPTED_PREFIX), column
        assert plain[column] not in stored and _opens_with(TEST_ENCRYPTION_KEY, stored), column

    shown = client.get(f"{ADMIN}/settings", headers=client.auth).json
    assert shown["callback_secret"] == plain[("tenant", "callback_secret")]
    rotated = client.post(f"{ADMIN}/settings/rotate-callback-secret", headers=client.auth)
    assert rotated.status_code == 200, rotated.json
    new_secret = client.get(f"{ADMIN}/settings", headers=client.auth).json["callback_secret"]
    assert new_secret != plain[("tenant", "callback_secret")]
    stored = _raw(Tenant, "callback_secret", instance.tenant_id)
    assert stored.startswith(encryption.ENCRYPTED_PREFIX) and new_secret not in stored
    # The webhook secret still authenticates the gateway (decrypted to compare).
    patched = client.patch(f"{ADMIN}/instances/{instance.id}", json={"token": "other-token"}, headers=client.auth)
    assert patched.status_code == 200, patched.json
    assert Instance.get_by_id(instance.id).token == "other-token"
    assert "other-token" not in _raw(Instance, "token", instance.id)


def test_the_cli_stores_secrets_encrypted_and_prints_them_in_the_clear(db, monkeypatch):
    cli = Cli(database_url=db, monkeypatch=monkeypatch)
    cli("tenant", "create", "acme")
    cli("instance", "create", "--tenant", "acme", "--provider", "sandbox", "--name", "gw", "--token", GATEWAY_TOKEN)
    instance = Instance.get(Instance.name == "gw")
    shown = cli("tenant", "show", "acme").stdout
    secret = Tenant.get(Tenant.name == "acme").callback_secret
    assert f"callback secret (Standard Webhooks, verify webhook-signature with it): {secret}" in shown
    stored = _stored(instance)
    assert all(value.startswith(encryption.ENCRYPTED_PREFIX) for value in stored.values()), stored
    assert GATEWAY_TOKEN not in stored[("instance", "token")] and secret not in stored[("tenant", "callback_secret")]


def test_rotating_from_key_a_to_b_keeps_every_secret_readable(db, monkeypatch, keys):
    keys((KEY_A,))
    instance = _tenant_with_token()
    plain = _plain(instance)
    under_a = _stored(instance)
    assert all(_opens_with(KEY_A, value) for value in under_a.values())
    cli = Cli(database_url=db, monkeypatch=monkeypatch)

    # Step 1: the new key first, the old one after it; everything still reads.
    both = {encryption.KEYS_SETTING: f"{KEY_B},{KEY_A}"}
    assert "acme" in cli("tenant", "show", "acme", env=both).stdout
    lines = cli("secrets", "rotate", "--batch-size", "1", env=both).stdout.splitlines()
    # (The tenant's sandbox instance has no token: an empty value stays empty.)
    assert lines == ["tenant.callback_secret: 1 re-encrypted, 0 already current",
                     "instance.token: 1 re-encrypted, 1 already current",
                     "instance.webhook_secret: 2 re-encrypted, 0 already current"]
    under_b = _stored(instance)
    for column, value in under_b.items():
        assert value != under_a[column] and _opens_with(KEY_B, value) and not _opens_with(KEY_A, value), column
    # Safe to re-run: nothing left to re-encrypt, nothing rewritten.
    again = cli("secrets", "rotate", env=both).stdout.splitlines()
    assert [line.split(": ")[1] for line in again] == ["0 re-encrypted, 1 already current",
                                                       "0 re-encrypted, 2 already current",
                                                       "0 re-encrypted, 2 already current"], again
    assert _stored(instance) == under_b

    # Step 2: the old key dropped; every secret reads as before, through the CLI too.
    only_b = {encryption.KEYS_SETTING: KEY_B}
    shown = cli("tenant", "show", "acme", env=only_b).stdout
    assert plain[("tenant", "callback_secret")] in shown
    assert _plain(instance) == plain

    # The dropped key alone opens nothing: one line naming the setting.
    line = one_error_line(cli("tenant", "show", "acme", ok=False, env={encryption.KEYS_SETTING: KEY_A}))
    assert line.startswith("Error: ") and encryption.KEYS_SETTING in line and "Traceback" not in line


def test_migration_4_encrypts_a_database_holding_plaintext_secrets(db):
    instance = _tenant_with_token()
    plain = _plain(instance)
    # The database as 0003 left it: plaintext values, PostgreSQL's old column lengths.
    for model, name in SECRET_COLUMNS:
        field = model._meta.fields[name]
        for row in model.select():
            model.update({field: peewee.Value(getattr(row, name), converter=False)}).where(model.id == row.id).execute()
        if is_postgres():
            length = 500 if name == "token" else 100
            database.execute_sql(f'ALTER TABLE "{model._meta.table_name}" ALTER COLUMN "{name}" TYPE VARCHAR({length})')
    assert _stored(instance) == plain
    migrations.SchemaMigration.delete().where(migrations.SchemaMigration.version == 4).execute()

    assert [m.version for m in migrations.upgrade()] == [4]
    encrypted = _stored(instance)
    for column, value in encrypted.items():
        assert value.startswith(encryption.ENCRYPTED_PREFIX) and plain[column] not in value, column
    assert _plain(instance) == plain
    if is_postgres():
        types = database.execute_sql(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE (table_name, column_name) IN (('tenant', 'callback_secret'), ('instance', 'token'), "
            "('instance', 'webhook_secret'))").fetchall()
        assert sorted(t for _, _, t in types) == ["text", "text", "text"], types

    # Safe to re-run: encrypted values are left as they are.
    migrations.SchemaMigration.delete().where(migrations.SchemaMigration.version == 4).execute()
    assert [m.version for m in migrations.upgrade()] == [4]
    assert _stored(instance) == encrypted


def test_a_wrong_key_is_a_503_for_callers_and_names_the_setting_for_the_operator(db, keys, capsys):
    client = admin_client(db, operator_token=OPERATOR)
    keys((KEY_A,))  # not the key the secrets were written with
    response = client.get(f"{ADMIN}/settings", headers=client.auth)
    assert response.status_code == 503, response.json
    assert response.json == {"success": False, "message": encryption.UNREADABLE_MESSAGE}
    assert response.headers["Retry-After"]
    with pytest.raises(encryption.EncryptionMisconfigured) as raised:
        Tenant.get_by_id(client.setup.tenant.id)
    assert encryption.KEYS_SETTING in str(raised.value) and "Fernet" not in str(raised.value)


def test_without_keys_sqlite_keeps_a_local_key_and_postgresql_refuses_to_start(db, monkeypatch, keys):
    cli = Cli(database_url=db, monkeypatch=monkeypatch)
    unset = {encryption.KEYS_SETTING: ""}
    if is_postgres():
        line = one_error_line(cli("tenant", "create", "acme", ok=False, env=unset))
        assert line.startswith("Error: ") and f"{encryption.KEYS_SETTING} is not set" in line, line
        assert Tenant.select().count() == 0
        return
    cli("tenant", "create", "acme", env=unset)
    path = db.split(":///", 1)[1] + encryption.LOCAL_KEY_SUFFIX
    assert stat.S_IMODE(os.stat(path).st_mode) == encryption.OWNER_ONLY
    with open(path) as handle:
        local = handle.read().strip()
    stored = _raw(Tenant, "callback_secret", Tenant.get(Tenant.name == "acme").id)
    assert _opens_with(local, stored) and not _opens_with(TEST_ENCRYPTION_KEY, stored)
    # The next process reads the same key.
    assert Tenant.get(Tenant.name == "acme").callback_secret in cli("tenant", "show", "acme", env=unset).stdout
    with open(path) as handle:
        assert handle.read().strip() == local


def test_a_malformed_key_or_an_empty_key_file_is_refused_with_the_setting_named(tmp_path, keys):
    with pytest.raises(encryption.EncryptionMisconfigured, match=f"{encryption.KEYS_SETTING}: key 2 is not a Fernet key"):
        encryption.configure(keys=(KEY_A, "not-a-key"), database_url="postgresql://nobody@127.0.0.1/none")
    with pytest.raises(encryption.EncryptionMisconfigured, match=f"{encryption.KEYS_SETTING} is not set"):
        encryption.configure(keys=(), database_url="postgresql://nobody@127.0.0.1/none")
    with pytest.raises(encryption.EncryptionMisconfigured, match=f"{encryption.KEYS_SETTING} holds no key"):
        encryption.install(())
    (tmp_path / "b.sqlite3.key").write_text("\n")
    with pytest.raises(encryption.EncryptionMisconfigured, match="is empty"):
        encryption.configure(keys=(), database_url=f"sqlite:///{tmp_path}/b.sqlite3")
    (tmp_path / "c.sqlite3.key").mkdir()
    with pytest.raises(encryption.EncryptionMisconfigured, match="cannot read the local encryption key"):
        encryption.configure(keys=(), database_url=f"sqlite:///{tmp_path}/c.sqlite3")
    # A key file that vanishes as another process makes it: linking ours fails
    # (the name exists), reading the other one's fails too.
    (tmp_path / "d.sqlite3.key").symlink_to(tmp_path / "nowhere")
    with pytest.raises(encryption.EncryptionMisconfigured, match="cannot create the local encryption key"):
        encryption.configure(keys=(), database_url=f"sqlite:///{tmp_path}/d.sqlite3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.sqlite3.key", "c.sqlite3.key", "d.sqlite3.key"]


def test_an_in_memory_database_gets_one_key_per_process(keys):
    encryption.configure(keys=(), database_url="sqlite:///:memory:")
    first = encryption.encrypt("secret")
    encryption.configure(keys=(), database_url="sqlite:///:memory:")
    assert encryption.decrypt(first) == "secret"
    assert encryption.encrypt("") == "" and encryption.decrypt("legacy plaintext") == "legacy plaintext"


def test_processes_starting_at_once_agree_on_one_local_key(tmp_path):
    path = str(tmp_path / "billing.sqlite3.key")
    start = threading.Barrier(8)

    def make() -> str:
        start.wait()
        return encryption.load_or_create_key_file(path)

    with ThreadPoolExecutor(max_workers=8) as pool:
        made = list(pool.map(lambda _: make(), range(8)))
    assert len(set(made)) == 1 and open(path).read().strip() == made[0]
    assert [p.name for p in tmp_path.iterdir()] == ["billing.sqlite3.key"]  # no temporary file left


def test_the_field_rotation_helpers_and_a_process_without_keys(keys):
    field = encryption.EncryptedField()
    assert field.db_value(None) is None and field.python_value(None) is None
    keys((KEY_B, KEY_A))
    plain, old = encryption.reencrypt("legacy"), Fernet(KEY_A.encode()).encrypt(b"old").decode()
    assert plain.startswith(encryption.ENCRYPTED_PREFIX) and encryption.decrypt(plain) == "legacy"
    rotated = encryption.reencrypt(encryption.ENCRYPTED_PREFIX + old)
    assert _opens_with(KEY_B, rotated) and encryption.decrypt(rotated) == "old"
    assert encryption.reencrypt(rotated) == rotated and encryption.reencrypt("") == ""
    encryption._keyring = None  # a process that never installed its keys (the fixture installs the suite's after)
    with pytest.raises(encryption.EncryptionMisconfigured, match=f"no encryption key is installed.*{encryption.KEYS_SETTING}"):
        encryption.encrypt("x")


def test_generate_key_prints_a_usable_key_without_a_database(monkeypatch):
    cli = Cli(database_url="postgresql://nobody@203.0.113.1:1/none", monkeypatch=monkeypatch)
    printed = cli("secrets", "generate-key", env={encryption.KEYS_SETTING: ""}).stdout.strip()
    assert Fernet(printed.encode()).decrypt(Fernet(printed.encode()).encrypt(b"x")) == b"x"


def test_the_settings_keep_keys_out_of_their_repr_and_read_the_environment_at_wiring(monkeypatch):
    settings = Settings.from_env({encryption.KEYS_SETTING: f" {KEY_A} , {KEY_B} ,"})
    assert settings.keys() == (KEY_A, KEY_B) and KEY_A not in repr(settings)
    monkeypatch.setenv(encryption.KEYS_SETTING, KEY_B)
    assert Settings(database_url="sqlite:///x").keys() == (KEY_B,)


def test_a_new_sqlite_file_and_its_directory_are_the_owners_only(tmp_path, keys):
    path = tmp_path / "fresh" / "billing.sqlite3"
    try:
        billing_db.connect(f"sqlite:///{path}")
        migrations.upgrade()
    finally:
        billing_db.database.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == billing_db.SQLITE_FILE_MODE
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == billing_db.SQLITE_DIRECTORY_MODE
    wal = path.parent / "billing.sqlite3-wal"
    if wal.exists():  # SQLite gives its journal the database file's mode
        assert stat.S_IMODE(os.stat(wal).st_mode) & 0o077 == 0
