"""Versioned schema migrations: ``billing db upgrade``.

Each migration is a numbered function applied once, in order, inside a
transaction, and recorded in ``schema_migrations``. Running upgrade again does
nothing. Migrations after the first change the schema with
:mod:`playhouse.migrate` and check what exists first, so a half-applied upgrade
on SQLite (whose DDL is transactional too, but whose ALTER is limited) can be
run again safely.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import peewee

from billing.clock import utcnow
from billing.adapters.db import database, is_postgres, write_transaction
from billing.adapters import models

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


def _add_missing_columns(model, *names: str) -> None:
    """Add the model's columns ``names`` that the table lacks (idempotent)."""
    from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

    table = model._meta.table_name
    present = {c.name for c in database.get_columns(table)}
    migrator = PostgresqlMigrator(database) if is_postgres() else SqliteMigrator(database)
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


#: Every migration, oldest first. Append; never edit one that has shipped.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _0001_initial),
    Migration(2, "field guarantees: health reasons, worker claims, heartbeats", _0002_field_guarantees),
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
