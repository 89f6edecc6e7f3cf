"""The ``billing`` command: admin work and the processes.

Each command is thin: it reads its options, calls billing/, and prints. Errors
are one readable line on stderr and exit status 1 (2 for usage errors).
"""
from __future__ import annotations

import functools
import json
import sys

import click

from billing.config import Settings
from billing.errors import BillingError


def _setup(settings: Settings | None = None) -> Settings:
    from billing.db import connect
    from billing.logconfig import configure_logging

    settings = settings or Settings.from_env()
    configure_logging(log_format=settings.log_format, level=settings.log_level)
    connect(settings.database_url)
    return settings


def command(group: click.Group, name: str | None = None, **kwargs):
    """A subcommand that connects the database and turns domain errors into one line."""

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kw):
            try:
                _setup()
                return func(*args, **kw)
            except BillingError as exc:
                raise click.ClickException(exc.message) from None
            except ValueError as exc:  # a bad environment variable, for instance
                raise click.ClickException(str(exc)) from None

        return group.command(name, **kwargs)(wrapper)

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """WhatsApp billing reminders: admin commands and processes."""


# --- db -------------------------------------------------------------------

@main.group()
def db() -> None:
    """Database schema."""


@command(db, "upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations (safe to run again)."""
    from billing import migrations

    applied = migrations.upgrade()
    for migration in applied:
        click.echo(f"applied {migration.version:04d} {migration.name}")
    click.echo(f"schema at version {migrations.current_version()}")


# --- tenant ---------------------------------------------------------------

@main.group()
def tenant() -> None:
    """Tenants (the businesses that send)."""


@command(tenant, "create")
@click.argument("name")
@click.option("--timezone", default="America/Sao_Paulo", show_default=True, help="IANA time zone.")
def tenant_create(name: str, timezone: str) -> None:
    """Create tenant NAME."""
    from billing import tenants

    row = tenants.create_tenant(name, timezone=timezone)
    click.echo(f"tenant {row.name} created (id {row.id}, timezone {row.timezone})")


# --- apikey ---------------------------------------------------------------

@main.group()
def apikey() -> None:
    """API keys for ERPs."""


@command(apikey, "create")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name.")
@click.option("--name", default="", help="A label for people.")
@click.option("--types", default="", help="Comma-separated template types the key may send (default: all).")
def apikey_create(tenant_name: str, name: str, types: str) -> None:
    """Create a key; the key alone is printed on the last line (shown only once)."""
    from billing import apikeys, tenants

    issued = apikeys.issue_key(tenants.get_tenant(tenant_name), name=name, types=types or None)
    click.echo(f"# API key for tenant {tenant_name} (types: {issued.api_key.template_types}); it is not shown again:", err=False)
    click.echo(issued.secret)


# --- template -------------------------------------------------------------

@main.group()
def template() -> None:
    """Message templates and their variations."""


def _load_template_file(path: str) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)  # YAML is a superset of JSON
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{path} is not valid JSON/YAML: {exc}") from None
    if not isinstance(data, dict):
        raise click.ClickException(f"{path} must hold an object with type, name and variations")
    return data


@command(template, "create")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name.")
@click.option("--type", "template_type", type=click.Choice(["overdue", "upcoming", "notification"]), help="Template type.")
@click.option("--name", default=None, help="Template name.")
@click.option("--variation", "variations", multiple=True, help="A variation's text (repeat for more).")
@click.option("--strategy", type=click.Choice(["random", "sequential", "weighted"]), default=None, help="Rotation strategy (default random).")
@click.option("--file", "path", type=click.Path(dir_okay=False), help="JSON/YAML file with type, name, strategy, variations.")
def template_create(tenant_name, template_type, name, variations, strategy, path) -> None:
    """Create a template; options override the file's values."""
    from billing import templates, tenants

    data = _load_template_file(path) if path else {}
    template_type = template_type or data.get("type")
    name = name or data.get("name")
    strategy = strategy or data.get("strategy") or "random"
    texts = list(variations) or data.get("variations") or []
    if not template_type or not name:
        raise click.UsageError("--type and --name are required (or give them in --file)")
    row = templates.create_template(
        tenants.get_tenant(tenant_name), type=template_type, name=name, variations=texts, strategy=strategy
    )
    click.echo(f"template {row.name} ({row.type}, {len(texts)} variations, {row.strategy}) created (id {row.id})")


# --- instance -------------------------------------------------------------

@main.group()
def instance() -> None:
    """WhatsApp instances (numbers behind a gateway)."""


@command(instance, "create")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name.")
@click.option("--provider", type=click.Choice(["sandbox", "evolution", "waha"]), required=True)
@click.option("--name", required=True, help="Instance name (Evolution instance / WAHA session).")
@click.option("--url", default="", help="Gateway base URL.")
@click.option("--token", default="", help="Gateway API key.")
@click.option("--messages-per-minute", type=float, default=None, help="Send pace of this number.")
def instance_create(tenant_name, provider, name, url, token, messages_per_minute) -> None:
    """Register an instance."""
    from billing import tenants

    row = tenants.create_instance(
        tenants.get_tenant(tenant_name), name=name, provider=provider, url=url, token=token,
        messages_per_minute=messages_per_minute,
    )
    click.echo(f"instance {row.name} ({row.provider}, {row.messages_per_minute:g}/min) created (id {row.id})")


# --- outbox ---------------------------------------------------------------

@command(main, "outbox")
@click.option("--tenant", "tenant_name", default=None, help="Only this tenant's messages.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the newest N messages.")
def outbox(tenant_name, as_json, limit) -> None:
    """Messages the sandbox gateway recorded instead of sending."""
    from billing import outbox as sandbox_outbox

    for item in sandbox_outbox.messages(tenant_name=tenant_name, limit=limit):
        if as_json:
            click.echo(json.dumps(item, ensure_ascii=False))
        else:
            click.echo(f"{item['sent_at']}  {item['phone']}  contact {item['contact_id']}\n    {item['text'].replace(chr(10), chr(10) + '    ')}")


# --- processes ------------------------------------------------------------

@command(main, "run")
@click.option("--host", default=None, help="Listen address (default HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default PORT or 8000).")
def run(host, port) -> None:
    """The embedded all-in-one mode: web, worker and scheduler in one process."""
    from billing_cli.embedded import run_embedded

    run_embedded(host=host, port=port)


@command(main, "scheduler")
def scheduler() -> None:
    """The scheduler process (production): periodic jobs that enqueue actors."""
    from scheduler import build_scheduler

    click.echo("scheduler started", err=True)
    build_scheduler(blocking=True).start()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
