"""Building tenants and their setup for tests, through the real services."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from billing import apikeys, bootstrap, tenants
from billing.adapters.models import Instance, Tenant


@dataclass
class Setup:
    tenant: Tenant
    api_key: str
    instance: Instance


def make_tenant(
    name: str = "acme", *, messages_per_minute: float = 60_000, timezone: str = "America/Sao_Paulo",
    business_hours: str = "always", holidays: str = "none", pace: dict | None = None, **settings,
) -> Setup:
    """A tenant with the default templates, a fast sandbox instance and a key.
    Open at all hours and on holidays unless told otherwise, so tests do not
    depend on the clock. ``pace``: instance settings (e.g. min_interval)."""
    tenant = tenants.create_tenant(name, timezone=timezone, business_hours=business_hours, holidays=holidays, **settings)
    bootstrap.install_default_templates(tenant)
    instance = tenants.create_instance(
        tenant, name="sandbox", provider="sandbox", messages_per_minute=messages_per_minute, **(pace or {})
    )
    issued = apikeys.issue_key(tenant, name="test")
    return Setup(tenant=tenant, api_key=issued.secret, instance=instance)


def contact(phone: str = "+5511987654321", **extra) -> dict:
    base = {"nome_cliente": "João Silva", "telefone": phone, "valor": 150.0, "data_vencimento": "2025-01-15"}
    base.update(extra)
    return base


def phones(count: int, *, start: int = 0) -> list[str]:
    """``count`` distinct valid São Paulo mobile numbers."""
    return [f"+55119{(10_000_000 + start + i):08d}" for i in range(count)]


class RecordedJobs:
    """Stands in for the broker in tests of the web shim: records what it
    would have enqueued (web.Jobs)."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.delivered: list[str] = []
        self.answered: list[int] = []

    def start_queue(self, queue_id: str) -> None:
        self.started.append(queue_id)

    def callbacks(self, delivery_ids: list[str]) -> None:
        self.delivered.extend(delivery_ids)

    def auto_replies(self, inbound_ids: list[int]) -> None:
        self.answered.extend(inbound_ids)


class LiveApp:
    """The Flask app on a real port (gateways post webhooks to ``base``),
    recording what it hands to the broker.

    Parameters:
      url: the database URL.
    """

    def __init__(self, url: str) -> None:
        from werkzeug.serving import make_server

        from billing.config import Settings
        from web import create_app

        self.jobs = RecordedJobs()
        self.started, self.callbacks = self.jobs.started, self.jobs.delivered
        app = create_app(Settings(database_url=url), jobs=self.jobs)
        self.client = app.test_client()
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def admin_client(db: str, *, operator_token: str):
    """A test client of the admin API, signed in as a new tenant's admin
    (``client.setup`` is the tenant, ``client.auth`` the header).

    Parameters:
      db: the database URL.
      operator_token: the operator's token the app is configured with.
    """
    from billing.config import Settings
    from web import create_app

    app = create_app(Settings(database_url=db, admin_token=operator_token), jobs=RecordedJobs())
    client = app.test_client()
    client.setup = make_tenant()
    _, token = apikeys.issue_admin_token(client.setup.tenant)
    client.auth = {"Authorization": f"Bearer {token}"}
    return client


#: CLI mistakes and the start of the one error line each must print (after
#: ``billing tenant create acme``).
BAD_CLI_INPUT = [
    (["tenant", "create", "acme"], "Error: tenant 'acme' already exists"),
    (["tenant", "create", "x", "--timezone", "Mars/Olympus"], "Error: unknown time zone 'Mars/Olympus'"),
    (["tenant", "show", "ghost"], "Error: no tenant named 'ghost'"),
    (["tenant", "update", "acme", "--holiday-dates", "2030-13-45"], "Error: "),
    (["apikey", "create", "--tenant", "ghost"], "Error: no tenant named 'ghost'"),
    (["apikey", "create", "--tenant", "acme", "--types", "overdue,spam"], "Error: unknown template type(s) spam"),
    (["template", "create", "--tenant", "acme", "--type", "overdue", "--name", "b", "--variation", "{{#if x}}open"],
     "Error: variation 1: unclosed"),
    (["template", "create", "--tenant", "acme", "--file", "/nonexistent.yaml"], "Error: cannot read /nonexistent.yaml"),
    (["instance", "create", "--tenant", "acme", "--provider", "waha", "--name", "w"], "Error: a waha instance needs --url"),
    (["instance", "create", "--tenant", "acme", "--provider", "sandbox", "--name", "s", "--messages-per-minute", "-1"],
     "Error: messages per minute must be between"),
    (["instance", "show", "--tenant", "acme", "--name", "ghost"], "Error: "),
]
