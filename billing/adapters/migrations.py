"""Versioned schema migrations: ``billing db upgrade``.

Each migration is a numbered function applied once, in order, inside a
transaction, and recorded in ``schema_migrations``. Running upgrade again does
nothing. Migrations after the first change the schema with
:mod:`playhouse.migrate` and check what exists first, so a half-applied upgrade
on SQLite (whose DDL is transactional too, but whose ALTER is limited) can be
run again safely.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import peewee

from billing.adapters import models
from billing.adapters.db import database, is_postgres, write_transaction
from billing.clock import utcnow

#: Any constant works; it only has to be the same in every process so that two
#: processes upgrading at once on PostgreSQL take turns.
PG_MIGRATION_LOCK_KEY = 727_001


class SchemaMigration(models.BaseModel):
    version = peewee.IntegerField(primary_key=True)
    name = peewee.CharField(max_length=200)
    applied_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "schema_migrations"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[], None]


def _0001_initial() -> None:
    database.create_tables(models.ALL_MODELS, safe=True)


def _migrator():
    """The schema migrator (playhouse.migrate) of the bound database."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator

    return PostgresqlMigrator(database) if is_postgres() else SqliteMigrator(database)


def _add_missing_columns(model, *names: str) -> None:
    """Add the model's columns ``names`` that the table lacks (idempotent)."""
    from playhouse.migrate import migrate

    table = model._meta.table_name
    present = {c.name for c in database.get_columns(table)}
    migrator = _migrator()
    operations = [
        migrator.add_column(table, model._meta.fields[name].column_name, model._meta.fields[name])
        for name in names
        if model._meta.fields[name].column_name not in present
    ]
    if operations:
        migrate(*operations)


def _0002_field_guarantees() -> None:
    """Instance health reasons and sent counts, claims that name their worker,
    published bookings, ambiguous sends, auto-reply claims, process heartbeats."""
    _add_missing_columns(models.Instance, "health_reason", "sent_day", "sent_count")
    _add_missing_columns(models.Contact, "enqueued_at", "claimed_by", "outcome_unknown")
    _add_missing_columns(models.InboundMessage, "answer_claimed_at")
    database.create_tables([models.Heartbeat], safe=True)
    models.Contact._schema.create_indexes(safe=True)


#: What ``api_key.template_types`` held for a key allowed every type, the
#: default before 0003. Frozen on purpose: it names the types of that time,
#: not the ones declared today.
LEGACY_ALL_TYPES = frozenset({"overdue", "upcoming", "notification"})


class _ApiKeyBefore0003(models.BaseModel):
    """The two scope columns of ``api_key`` while 0003 converts one into the other."""

    template_types = peewee.CharField(max_length=64)
    message_types = models.JSONField(null=True)

    class Meta:
        table_name = models.ApiKey._meta.table_name


def _0003_key_scopes() -> None:
    """API-key scopes that a new message type does not break: comma-joined
    text (``template_types``) becomes NULL for every type (later ones too) or
    an explicit JSON list (``message_types``).

    A key listing every type of that time had no way to say "all" and gets
    NULL; a subset keeps exactly its types. One UPDATE per distinct scope, so
    a large key table converts in a few statements."""
    from playhouse.migrate import migrate

    table = models.ApiKey._meta.table_name
    if "template_types" not in {c.name for c in database.get_columns(table)}:
        return  # created with the new column (0001 on today's models), or converted already
    _add_missing_columns(models.ApiKey, "message_types")
    old = _ApiKeyBefore0003
    for (text,) in old.select(old.template_types).distinct().tuples():
        types = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
        scope = None if LEGACY_ALL_TYPES <= set(types) else types
        old.update(message_types=scope).where(old.template_types == text).execute()
    migrate(_migrator().drop_column(table, "template_types"))


#: The secret columns 0004 encrypts, as (table, column): PostgreSQL widens
#: them to text first (ciphertext outgrows their old lengths; SQLite never
#: enforced those). Frozen on purpose, like every shipped migration.
SECRET_COLUMNS_0004 = (("tenant", "callback_secret"), ("instance", "token"), ("instance", "webhook_secret"))


def _0004_encrypted_secrets() -> None:
    """Gateway tokens, webhook secrets and callback secrets encrypted at rest
    (billing.adapters.encryption): the columns become text, and each
    plaintext value is encrypted with the first key; values encrypted
    already are left alone, so a second run changes nothing."""
    from billing import rekey

    by_table = {model._meta.table_name: model for model in models.ALL_MODELS}
    for table, column in SECRET_COLUMNS_0004:
        if is_postgres():
            database.execute_sql(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE TEXT')
        model = by_table[table]
        rekey.rewrite_column(model, model._meta.columns[column], rekey.encrypt_plaintext)


def _0005_ceilings_and_replays() -> None:
    """The operator's ceilings on a tenant's limits, and the signed webhook
    events already received (replays apply nothing again)."""
    _add_missing_columns(models.Tenant, "ceilings")
    database.create_tables([models.WebhookDelivery], safe=True)


#: Every migration, oldest first. Append; never edit one that has shipped.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _0001_initial),
    Migration(2, "field guarantees: health reasons, worker claims, heartbeats", _0002_field_guarantees),
    Migration(3, "API-key scopes: NULL for every message type, or a JSON list", _0003_key_scopes),
    Migration(4, "secrets encrypted at rest: gateway tokens, webhook and callback secrets", _0004_encrypted_secrets),
    Migration(5, "limit ceilings per tenant, signed webhook events received", _0005_ceilings_and_replays),
)


def applied_versions() -> set[int]:
    """Versions already applied to the bound database."""
    if not database.table_exists(SchemaMigration._meta.table_name):
        return set()
    return {row.version for row in SchemaMigration.select(SchemaMigration.version)}


def upgrade() -> list[Migration]:
    """Apply every pending migration; return the ones applied now."""
    database.create_tables([SchemaMigration], safe=True)
    applied: list[Migration] = []
    with write_transaction():
        if is_postgres():
            # Transaction-scoped: released at commit, even if we crash.
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (PG_MIGRATION_LOCK_KEY,))
        done = applied_versions()
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            migration.apply()
            SchemaMigration.create(version=migration.version, name=migration.name)
            applied.append(migration)
    return applied


def current_version() -> int:
    """The highest applied version (0 for an empty database)."""
    return max(applied_versions(), default=0)
