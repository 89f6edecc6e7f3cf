"""The ``billing`` command: admin work and the processes.

Each command is thin: it reads its options, calls billing/, and prints. Errors
are one readable line on stderr and exit status 1 (2 for usage errors),
database mistakes included: a server that does not answer, a database that
does not exist, a schema that ``billing db upgrade`` has not brought up to
date, a DATABASE_URL that cannot be read.
"""
from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterable, Iterator

import click

from billing.config import Settings
from billing.domain import message_types
from billing.errors import (
    BillingError,
    ServiceUnavailable,
    database_problem,
    require_current_schema,
)


def _setup(settings: Settings | None = None) -> Settings:
    """Wire the process (tasks.setup: logging, the database, the broker).

    Raises:
      DatabaseMisconfigured: DATABASE_URL cannot be read, or its SQLite
        directory cannot be created.
    """
    import tasks

    return tasks.setup(settings=settings).settings


def _database_url() -> str:
    try:
        return Settings.from_env().database_url
    except ValueError:
        return ""


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn domain errors and database mistakes raised inside into one
    readable line on stderr and exit status 1 (click.ClickException)."""
    try:
        yield
    except ServiceUnavailable as exc:
        raise click.ClickException(exc.detail) from None
    except BillingError as exc:
        raise click.ClickException(exc.message) from None
    except click.ClickException:
        raise
    except Exception as exc:
        problem = database_problem(exc, url=_database_url())
        if problem is not None:
            raise click.ClickException(problem.detail) from None
        if isinstance(exc, ValueError):  # a bad environment variable, for instance
            raise click.ClickException(str(exc)) from None
        raise


def preflight(*, needs_schema: bool = True) -> Settings:
    """Bind the database and check it before a command's work, failing with
    one line: unreachable, missing, misconfigured, or (``needs_schema``) not
    upgraded. A process command that does not use :func:`command` (e.g.
    ``billing worker``) calls it first.

    Parameters:
      needs_schema: refuse a schema older than the code ("run `billing db upgrade` first").
    """
    with one_line_errors():
        settings = _setup()
        if needs_schema:
            require_current_schema()
        return settings


def command(group: click.Group, name: str | None = None, *, needs_schema: bool = True, **kwargs):
    """A subcommand that connects the database and turns domain errors, and
    database mistakes, into one line.

    Parameters:
      group: the click group the command belongs to.
      name: the command's name (default: the function's).
      needs_schema: refuse to run on a schema older than the code, with
        "run `billing db upgrade` first" (False for the commands that upgrade).
    """

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kw):
            preflight(needs_schema=needs_schema)
            with one_line_errors():
                return func(*args, **kw)

        return group.command(name, **kwargs)(wrapper)

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """WhatsApp billing reminders: admin commands and processes."""


# --- db -------------------------------------------------------------------

@main.group()
def db() -> None:
    """Database schema."""


@command(db, "upgrade", needs_schema=False)
def db_upgrade() -> None:
    """Apply pending schema migrations (safe to run again)."""
    from billing.adapters import migrations

    applied = migrations.upgrade()
    for migration in applied:
        click.echo(f"applied {migration.version:04d} {migration.name}")
    click.echo(f"schema at version {migrations.current_version()}")


# --- tenant ---------------------------------------------------------------

@main.group()
def tenant() -> None:
    """Tenants (the businesses that send)."""


def tenant_settings(func):
    """The options every tenant command shares (None: leave as is)."""
    options = [
        click.option("--business-hours", help='e.g. "mon-fri 08:00-18:00, sat 08:00-12:00" or "always".'),
        click.option("--holidays", help="BR (national), BR-SP (with a state's) or none."),
        click.option("--holiday-dates", help="Comma-separated YYYY-MM-DD dates the tenant is closed."),
        click.option("--recipient-timezone/--tenant-timezone", default=None,
                     help="Read business hours in each recipient's zone (from the phone's area code)."),
        click.option("--daily-cap", type=int, help="Messages per day across all instances (0: no cap)."),
        click.option("--max-attempts", type=int, help="Send attempts before a contact fails."),
        click.option("--allow-private-callbacks/--public-callbacks-only", default=None,
                     help="Allow callback URLs on private or loopback addresses (off: SSRF guard)."),
        click.option("--auto-reply/--no-auto-reply", default=None,
                     help="Answer 'how do I pay' replies with the contact's PIX code or payment link."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _tenant_changes(business_hours, holidays, holiday_dates, recipient_timezone, daily_cap, max_attempts,
                    allow_private_callbacks, auto_reply) -> dict:
    return {
        "business_hours": business_hours, "holidays": holidays, "recipient_timezone": recipient_timezone,
        "extra_holidays": [d for d in holiday_dates.split(",") if d.strip()] if holiday_dates is not None else None,
        "daily_cap": daily_cap, "max_attempts": max_attempts, "allow_private_callbacks": allow_private_callbacks,
        "auto_reply": auto_reply,
    }


def _describe_tenant(row) -> str:
    return (
        f"tenant {row.name} (id {row.id}): timezone {row.timezone}; hours {row.business_hours}; "
        f"holidays {row.holidays}{' + ' + ','.join(row.extra_holidays) if row.extra_holidays else ''}; "
        f"daily cap {row.daily_cap or 'none'}; max attempts {row.max_attempts}"
        f"{'; hours in the recipient zone' if row.recipient_timezone else ''}"
    )


@command(tenant, "create")
@click.argument("name")
@click.option("--timezone", default="America/Sao_Paulo", show_default=True, help="IANA time zone.")
@tenant_settings
def tenant_create(name: str, timezone: str, **settings) -> None:
    """Create tenant NAME."""
    from billing import tenants

    row = tenants.create_tenant(name, timezone=timezone, **_tenant_changes(**settings))
    click.echo(_describe_tenant(row).replace(f"tenant {row.name}", f"tenant {row.name} created", 1))


@command(tenant, "update")
@click.argument("name")
@click.option("--timezone", default=None, help="IANA time zone.")
@tenant_settings
def tenant_update(name: str, timezone: str | None, **settings) -> None:
    """Change tenant NAME's settings."""
    from billing import tenants

    row = tenants.update_tenant(tenants.get_tenant(name), timezone=timezone, **_tenant_changes(**settings))
    click.echo(_describe_tenant(row))


@command(tenant, "show")
@click.argument("name")
def tenant_show(name: str) -> None:
    """Tenant NAME's settings and its callback signing secret."""
    from billing import tenants

    row = tenants.get_tenant(name)
    click.echo(_describe_tenant(row))
    click.echo(f"callback secret (Standard Webhooks, verify webhook-signature with it): {row.callback_secret}")


@command(tenant, "rotate-secret")
@click.argument("name")
def tenant_rotate_secret(name: str) -> None:
    """Give tenant NAME a new callback signing secret (printed on the last line)."""
    from billing import tenants

    click.echo(tenants.rotate_callback_secret(tenants.get_tenant(name)))


@command(tenant, "ceilings")
@click.argument("name")
@click.option("--api-hourly-limit", type=click.IntRange(min=0), default=None, help="Highest default requests per key per hour.")
@click.option("--key-hourly-limit", type=click.IntRange(min=0), default=None, help="Highest requests per hour of one key.")
@click.option("--daily-message-limit", type=click.IntRange(min=0), default=None, help="Highest contacts accepted per day.")
@click.option("--daily-cap", type=click.IntRange(min=0), default=None, help="Highest messages per day across instances.")
def tenant_ceilings(name: str, **given) -> None:
    """Show or set the highest limits tenant NAME's admins may set (0: back to the default ceiling)."""
    from billing import ceilings, tenants

    row = tenants.get_tenant(name)
    changes = {limit: value or None for limit, value in given.items() if value is not None}
    if changes:
        row = ceilings.set_ceilings(row, changes)
    shown = ", ".join(f"{limit} {value if value is not None else 'none'}" for limit, value in ceilings.ceilings_of(row).items())
    click.echo(f"tenant {row.name} ceilings: {shown}")


# --- apikey ---------------------------------------------------------------

@main.group()
def apikey() -> None:
    """API keys for ERPs."""


@command(apikey, "create")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name.")
@click.option("--name", default="", help="A label for people.")
@click.option("--types", default="", help="Comma-separated template types the key may send (default: all, later ones too).")
@click.option("--allowed-ips", default="", help="Comma-separated addresses or CIDRs the key may be used from.")
@click.option("--expires-in-days", type=click.IntRange(min=1), default=None, help="The key stops working after this.")
@click.option("--hourly-limit", type=click.IntRange(min=0), default=0, help="Requests per hour (0: tenant default).")
def apikey_create(tenant_name: str, name: str, types: str, allowed_ips: str, expires_in_days, hourly_limit) -> None:
    """Create a key; the key alone is printed on the last line (shown only once)."""
    from datetime import timedelta

    from billing import apikeys, tenants
    from billing.clock import utcnow

    issued = apikeys.issue_key(
        tenants.get_tenant(tenant_name), name=name, types=types or None, allowed_ips=allowed_ips,
        expires_at=utcnow() + timedelta(days=expires_in_days) if expires_in_days else None, hourly_limit=hourly_limit,
    )
    click.echo(f"# API key for tenant {tenant_name} (types: {','.join(issued.api_key.allowed_types)}); it is not shown again:", err=False)
    click.echo(issued.secret)


@command(apikey, "revoke")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name.")
@click.argument("prefix")
def apikey_revoke(tenant_name: str, prefix: str) -> None:
    """Revoke the key whose prefix (bk_xxxxxxxxxxxx) is PREFIX."""
    from billing import admin, tenants
    from billing.adapters.models import ApiKey
    from billing.errors import NotFound

    tenant_row = tenants.get_tenant(tenant_name)
    key = ApiKey.get_or_none((ApiKey.tenant == tenant_row.id) & (ApiKey.prefix == prefix.removeprefix("bk_")))
    if key is None:
        raise NotFound(f"tenant '{tenant_name}' has no key with prefix '{prefix}'")
    admin.revoke_key(tenant_row, key.id)
    click.echo(f"revoked {prefix}")


@main.group("admin-token")
def admin_token() -> None:
    """Tokens for the admin API (one tenant each)."""


@command(admin_token, "create")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name.")
@click.option("--name", default="", help="A label for people.")
def admin_token_create(tenant_name: str, name: str) -> None:
    """Create an admin token; the token alone is printed on the last line (shown only once)."""
    from billing import apikeys, tenants

    _, secret = apikeys.issue_admin_token(tenants.get_tenant(tenant_name), name=name)
    click.echo(f"# admin token for tenant {tenant_name} (Authorization: Bearer ...); it is not shown again:")
    click.echo(secret)


@command(admin_token, "list")
@click.option("--tenant", "tenant_name", default=None, help="Only this tenant's tokens (default: every tenant's).")
def admin_token_list(tenant_name: str | None) -> None:
    """List admin tokens (prefix, tenant, name, created, last used, revoked), never their secrets."""
    from billing import apikeys, tenants

    rows = apikeys.list_admin_tokens(tenant=tenants.get_tenant(tenant_name) if tenant_name else None)
    for row in rows:
        click.echo(f"{row['prefix']}  tenant {row['tenant']}  name {row['name'] or '-'}  created {row['created_at']}  "
                   f"last used {row['last_used_at'] or 'never'}  {'revoked ' + row['revoked_at'] if row['revoked_at'] else 'active'}")
    if not rows:
        click.echo("no admin tokens")


@command(admin_token, "revoke")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name.")
@click.argument("prefix")
def admin_token_revoke(tenant_name: str, prefix: str) -> None:
    """Revoke the admin token whose prefix (bat_xxxxxxxxxxxx, from `admin-token list`) is PREFIX."""
    from billing import apikeys, tenants

    token = apikeys.find_admin_token(prefix=prefix, tenant=tenants.get_tenant(tenant_name))
    apikeys.revoke_admin_token(token)
    click.echo(f"revoked {prefix}")


# --- template -------------------------------------------------------------

class MessageTypeChoice(click.Choice):
    """The declared message types, read from billing/domain/message_types.py
    whenever a command line is parsed or help is shown, so a type declared
    after this module was imported is a choice too."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        return message_types.names()

    @choices.setter
    def choices(self, _given) -> None:
        """click.Choice.__init__ stores its choices; these come from the registry."""


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
        # PyYAML's message spans lines (problem, context, a caret drawing); the
        # CLI promises one line: the problem and where it is.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise click.ClickException(f"{path} is not valid JSON/YAML: {problem}{where}") from None
    if not isinstance(data, dict):
        raise click.ClickException(f"{path} must hold an object with type, name and variations")
    return data


@command(template, "create")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name.")
@click.option("--type", "template_type", type=MessageTypeChoice(), help="Template type.")
@click.option("--name", default=None, help="Template name.")
@click.option("--variation", "variations", multiple=True, help="A variation's text (repeat for more).")
@click.option("--strategy", type=click.Choice(["random", "sequential", "weighted"]), default=None,
              help="Rotation strategy (default random).")
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


def instance_settings(func):
    """The pace options every instance command shares (None: leave as is)."""
    options = [
        click.option("--messages-per-minute", type=float, help="Average send pace of this number."),
        click.option("--min-interval", type=float, help="Shortest gap between two messages (seconds)."),
        click.option("--max-interval", type=float, help="Longest gap between two messages (seconds)."),
        click.option("--rest-every", type=int, help="Take a longer rest after this many messages (0: never)."),
        click.option("--rest-seconds", type=float, help="Length of that rest (seconds; up to 1.5x, at random)."),
        click.option("--daily-cap", type=int, help="Messages per day from this number (0: no cap)."),
        click.option("--warmup-days", type=int, help="Ramp a new number's daily cap up over these days (0: none)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _describe_instance(row) -> str:
    from billing.pacing import Pace

    pace = Pace.of(row)
    rest = f", rest after {row.rest_every} ({row.rest_seconds:g}s)" if row.rest_every else ""
    return (
        f"instance {row.name} ({row.provider}, {row.messages_per_minute:g}/min, gaps {pace.min_interval:g}-"
        f"{pace.max_interval:g}s{rest}, daily cap {row.daily_cap or 'none'}, warm-up {row.warmup_days or 'none'}"
        f"{'' if row.is_active else ', inactive'}) id {row.id}"
    )


class RegistryChoice(click.Choice):
    """A choice among the names a registry holds when a command line is
    parsed or help is shown, so a name registered after this module was
    imported is a choice too.

    Parameters:
      names: gives the registry's names.
    """

    def __init__(self, names: Callable[[], Iterable[str]]) -> None:
        self.names = names
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self.names())

    @choices.setter
    def choices(self, _given) -> None:
        """click.Choice.__init__ stores its choices; these come from the registry."""


def _provider_names() -> Iterable[str]:
    from billing.adapters.providers import PROVIDERS  # imported when used: it loads every provider module

    return PROVIDERS


@command(instance, "create")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name.")
@click.option("--provider", type=RegistryChoice(_provider_names), required=True, help="The gateway provider.")
@click.option("--name", required=True, help="Instance name (Evolution instance / WAHA session).")
@click.option("--url", default="", help="Gateway base URL.")
@click.option("--token", default="", help="Gateway API key.")
@instance_settings
def instance_create(tenant_name, provider, name, url, token, messages_per_minute, **pace) -> None:
    """Register an instance."""
    from billing import tenants

    row = tenants.create_instance(
        tenants.get_tenant(tenant_name), name=name, provider=provider, url=url, token=token,
        messages_per_minute=messages_per_minute, **pace,
    )
    click.echo(_describe_instance(row).replace(f"instance {row.name}", f"instance {row.name} created", 1))


@command(instance, "update")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name.")
@click.option("--name", required=True, help="Instance name.")
@click.option("--url", default=None, help="Gateway base URL.")
@click.option("--token", default=None, help="Gateway API key.")
@click.option("--active/--inactive", "is_active", default=None, help="Let it send, or not.")
@instance_settings
def instance_update(tenant_name, name, **changes) -> None:
    """Change an instance's pace or connection."""
    from billing import tenants

    tenant_row = tenants.get_tenant(tenant_name)
    row = tenants.update_instance(tenants.get_instance(tenant_row, name), **changes)
    click.echo(_describe_instance(row))


@command(instance, "show")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name.")
@click.option("--name", required=True, help="Instance name.")
def instance_show(tenant_name, name) -> None:
    """An instance's pace, health, and the webhook URL to configure on its gateway."""
    from billing import tenants
    from billing.config import Settings

    row = tenants.get_instance(tenants.get_tenant(tenant_name), name)
    click.echo(_describe_instance(row))
    from billing.adapters.providers import webhook_lines

    click.echo(f"health: {row.health}" + (f" (checked {row.health_checked_at:%Y-%m-%d %H:%M:%S} UTC)" if row.health_checked_at else ""))
    if row.health_reason:
        click.echo(f"down because: {row.health_reason}")
    for line in webhook_lines(row, base_url=Settings.from_env().public_url or "https://<PUBLIC_URL>"):
        click.echo(line)


# --- callbacks ------------------------------------------------------------

@main.group("callbacks")
def callbacks_group() -> None:
    """Callbacks sent to callers' callback_url."""


@command(callbacks_group, "list")
@click.option("--tenant", "tenant_name", default=None, help="Only this tenant's.")
@click.option("--status", type=click.Choice(["pending", "delivered", "failed", "disabled"]), default=None)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def callbacks_list(tenant_name, status, limit, as_json) -> None:
    """The newest callback deliveries."""
    from billing import callback_log

    for item in callback_log.deliveries(tenant_name=tenant_name, status=status, limit=limit):
        if as_json:
            click.echo(json.dumps(item, ensure_ascii=False))
        else:
            click.echo(f"{item['id']}  {item['created_at']}  {item['event']:<18} {item['status']:<9} "
                       f"attempts {item['attempts']}  last {item['last_status_code'] or '-'}  {item['url']}")


@command(callbacks_group, "show")
@click.argument("delivery_id")
def callbacks_show(delivery_id) -> None:
    """One delivery, its payload and every attempt."""
    from billing import callback_log

    item = callback_log.delivery(delivery_id)
    click.echo(json.dumps({k: v for k, v in item.items() if k != "attempts_log"}, ensure_ascii=False, indent=2))
    for attempt in item["attempts_log"]:
        took = "-" if attempt["duration_ms"] is None else f"{attempt['duration_ms']} ms"
        click.echo(f"  {attempt['attempted_at']}  {attempt['status_code'] or '-'}  {took}  {attempt['error']}")


@command(callbacks_group, "retry")
@click.argument("delivery_id")
def callbacks_retry(delivery_id) -> None:
    """Try a pending or failed delivery again now."""
    import tasks
    from billing import callback_log, callbacks

    callback_log.delivery(delivery_id)  # NotFound for an unknown id
    callbacks.retry_now(delivery_id)
    try:
        tasks.enqueue_callbacks([delivery_id])
    except Exception as exc:  # committed as due: the scheduler's recovery delivers it without the broker's help
        click.echo(f"{delivery_id} due now; the broker did not take it ({exc.__class__.__name__}), "
                   "the scheduler will deliver it")
        return
    click.echo(f"{delivery_id} queued")


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
            text = item['text'].replace(chr(10), chr(10) + '    ')
            click.echo(f"{item['sent_at']}  {item['phone']}  contact {item['contact_id']}\n    {text}")


# --- secrets --------------------------------------------------------------

@main.group("secrets")
def secrets_group() -> None:
    """The key that encrypts stored secrets (gateway tokens, webhook and callback secrets)."""


@secrets_group.command("generate-key")
def secrets_generate_key() -> None:
    """Print a new encryption key, for BILLING_ENCRYPTION_KEYS (touches no database)."""
    from billing.adapters import encryption

    click.echo(encryption.generate_key())


@command(secrets_group, "rotate")
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True, help="Rows per transaction.")
def secrets_rotate(batch_size: int) -> None:
    """Re-encrypt every stored secret with the first key of BILLING_ENCRYPTION_KEYS
    (safe to run again; the other keys may be dropped afterwards)."""
    from billing import rekey

    for report in rekey.rotate(batch_size=batch_size):
        click.echo(f"{report.column}: {report.rewritten} re-encrypted, {report.unchanged} already current")


# --- processes ------------------------------------------------------------

@command(main, "run", needs_schema=False)  # the embedded mode upgrades the schema itself
@click.option("--host", default=None, help="Listen address (default HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Listen port (default PORT or 8000).")
def run(host, port) -> None:
    """The embedded all-in-one mode: web, worker and scheduler in one process."""
    from billing_cli.embedded import run_embedded

    run_embedded(host=host, port=port)


@command(main, "scheduler")
def scheduler() -> None:
    """The scheduler process (production): periodic jobs that enqueue actors.
    Start two for availability: one leads, the other stands by."""
    from scheduler import run_leader

    run_leader(blocking=True)


from billing_cli.worker import worker as _worker_command  # noqa: E402  (it sets up its own logging)

main.add_command(_worker_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
