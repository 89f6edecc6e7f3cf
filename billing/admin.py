"""The admin API's rules: everything a tenant administrator manages, always
scoped to that tenant (another tenant's id is simply not found)."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from peewee import fn

from billing import apikeys, ceilings, limits, templates, tenants
from billing import campaigns as campaign_rules
from billing.adapters.db import write_transaction
from billing.adapters.models import (
    ApiKey,
    Campaign,
    Contact,
    InboundMessage,
    Instance,
    OptOut,
    Queue,
    Template,
    Tenant,
    Variation,
)
from billing.admin_schemas import (
    MAX_ID,
    ApiKeyCreate,
    CampaignsQuery,
    CeilingsPatch,
    InstanceCreate,
    InstancePatch,
    PreviewRequest,
    SettingsPatch,
    StatsQuery,
    TemplateCreate,
    TemplatePatch,
)
from billing.clock import as_utc_iso, utcnow
from billing.domain.duedates import today_in
from billing.domain.states import ContactStatus
from billing.domain.templating import MessageTooLong, MissingVariable, TemplateSyntaxError, compile_template
from billing.errors import InvalidRequest, NotFound

#: The usage shown with a key covers this many hours.
USAGE_WINDOW = timedelta(hours=24)

#: Default and longest span of the stats.
DEFAULT_STATS_DAYS = 30
MAX_STATS_DAYS = 366


def _owned(model, row_id, tenant: Tenant, what: str):
    if not 0 < row_id <= MAX_ID:  # beyond the database's ids: cannot exist
        raise NotFound(f"{what} not found")
    row = model.get_or_none((model.id == row_id) & (model.tenant == tenant.id))
    if row is None:
        raise NotFound(f"{what} not found")
    return row


# --- API keys -------------------------------------------------------------

def key_view(key: ApiKey) -> dict:
    now = utcnow()
    return {
        "id": key.id,
        "name": key.name,
        "prefix": f"{apikeys.KEY_MARK}_{key.prefix}",
        "types": list(key.allowed_types),
        "allowed_ips": key.allowed_ips,
        "hourly_limit": key.hourly_limit,
        "expires_at": as_utc_iso(key.expires_at),
        "created_at": as_utc_iso(key.created_at),
        "last_used_at": as_utc_iso(key.last_used_at),
        "last_used_ip": key.last_used_ip,
        "revoked_at": as_utc_iso(key.revoked_at),
        "requests_last_24h": limits.usage(f"apikey:{key.id}", since=now - USAGE_WINDOW),
    }


def list_keys(tenant: Tenant) -> list[dict]:
    return [key_view(k) for k in ApiKey.select().where(ApiKey.tenant == tenant.id).order_by(ApiKey.id)]


def create_key(tenant: Tenant, body: ApiKeyCreate, *, operator: bool = False) -> dict:
    """Issue a key; a tenant admin's hourly limit stays within the operator's ceiling.

    Parameters:
      tenant: the owner.
      body: the request.
      operator: the operator asks (not bound by the ceilings).
    """
    if not operator:
        ceilings.check_within(tenant, ceilings.KEY_HOURLY_LIMIT, body.hourly_limit or None)
    expires = body.expires_at
    if expires is not None and expires.tzinfo is not None:
        try:
            expires = expires.astimezone(UTC).replace(tzinfo=None)  # stored as naive UTC
        except OverflowError:
            raise InvalidRequest("expires_at is out of the calendar's range") from None
    issued = apikeys.issue_key(
        tenant, name=body.name, types=body.types, allowed_ips=body.allowed_ips, expires_at=expires,
        hourly_limit=body.hourly_limit,
    )
    return {**key_view(issued.api_key), "key": issued.secret}


def revoke_key(tenant: Tenant, key_id: int) -> dict:
    key = _owned(ApiKey, key_id, tenant, "API key")
    ApiKey.update(revoked_at=utcnow()).where((ApiKey.id == key.id) & ApiKey.revoked_at.is_null()).execute()
    return key_view(ApiKey.get_by_id(key.id))


# --- templates --------------------------------------------------------------

def template_view(template: Template) -> dict:
    return {
        "id": template.id,
        "type": template.type,
        "name": template.name,
        "strategy": template.strategy,
        "is_active": template.is_active,
        "created_at": as_utc_iso(template.created_at),
        "updated_at": as_utc_iso(template.updated_at),
        "variations": [
            {"id": v.id, "text": v.text, "weight": v.weight, "times_used": v.times_used}
            for v in templates.active_variations(template)
        ],
    }


def _variation_items(items) -> list:
    return [item if isinstance(item, str) else {"text": item.text, "weight": item.weight} for item in items]


def list_templates(tenant: Tenant) -> list[dict]:
    return [template_view(t) for t in Template.select().where(Template.tenant == tenant.id).order_by(Template.id)]


def get_template(tenant: Tenant, template_id: int) -> dict:
    return template_view(_owned(Template, template_id, tenant, "template"))


def create_template(tenant: Tenant, body: TemplateCreate) -> dict:
    row = templates.create_template(
        tenant, type=body.type, name=body.name, variations=_variation_items(body.variations), strategy=body.strategy,
    )
    return template_view(row)


def update_template(tenant: Tenant, template_id: int, body: TemplatePatch) -> dict:
    template = _owned(Template, template_id, tenant, "template")
    with write_transaction():
        fields = {k: v for k, v in (("name", body.name), ("strategy", body.strategy), ("is_active", body.is_active)) if v is not None}
        if body.variations is not None:
            items = _variation_items(body.variations)
            checked = [templates.check_variation(i if isinstance(i, str) else i["text"], index=n) for n, i in enumerate(items)]
            # Old variations stay (contacts point at them) but are retired.
            Variation.update(is_active=False).where(Variation.template == template.id).execute()
            for position, (text, item) in enumerate(zip(checked, items)):
                Variation.create(template=template, position=position, text=text,
                                 weight=1 if isinstance(item, str) else item["weight"])
        Template.update(updated_at=utcnow(), **fields).where(Template.id == template.id).execute()
    return template_view(Template.get_by_id(template.id))


def delete_template(tenant: Tenant, template_id: int) -> None:
    template = _owned(Template, template_id, tenant, "template")
    Template.delete().where(Template.id == template.id).execute()


def preview(tenant: Tenant, body: PreviewRequest) -> dict:
    """Render text or a stored template's variations against sample
    variables, exactly as a send would, without sending anything."""
    if (body.text is None) == (body.template_id is None):
        raise InvalidRequest("give either text or template_id")
    texts = [(None, body.text)] if body.text is not None else [
        (v.id, v.text) for v in templates.active_variations(_owned(Template, body.template_id, tenant, "template"))
    ]
    today = today_in(tenant.timezone)
    try:
        values = campaign_rules.template_variables(dict(body.variables.items()), today=today)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    rendered = []
    for variation_id, text in texts:
        try:
            item = {"variation_id": variation_id, "text": compile_template(text).render(values), "error": None}
        except (TemplateSyntaxError, MessageTooLong) as exc:  # a preview is bounded as a send is
            raise InvalidRequest(str(exc)) from None
        except MissingVariable as exc:
            item = {"variation_id": variation_id, "text": None, "error": f"missing variable '{exc.name}'"}
        rendered.append(item)
    return {"variables": dict(values.items()), "rendered": rendered}


# --- instances ------------------------------------------------------------------

def instance_view(instance: Instance) -> dict:
    from billing.adapters.providers import webhook_url
    from billing.config import Settings
    from billing.pacing import Pace, sent_today

    pace = Pace.of(instance)
    return {
        "id": instance.id,
        "name": instance.name,
        "provider": instance.provider,
        "url": instance.url,
        "token_set": bool(instance.token),
        "is_active": instance.is_active,
        "health": instance.health,
        "health_reason": instance.health_reason,
        "health_checked_at": as_utc_iso(instance.health_checked_at),
        # The URL to set on the gateway (relative when PUBLIC_URL is unset); its secret authenticates webhooks.
        "webhook_url": webhook_url(instance, base_url=Settings.from_env().public_url) or None,
        "messages_per_minute": instance.messages_per_minute,
        "min_interval": pace.min_interval,
        "max_interval": pace.max_interval,
        "rest_every": instance.rest_every,
        "rest_seconds": instance.rest_seconds,
        "daily_cap": instance.daily_cap,
        "warmup_days": instance.warmup_days,
        # What the gateway accepted today (booked, unsent slots are not sends).
        "sent_today": sent_today(instance, now=utcnow()),
        "created_at": as_utc_iso(instance.created_at),
    }


def list_instances(tenant: Tenant) -> list[dict]:
    return [instance_view(i) for i in Instance.select().where(Instance.tenant == tenant.id).order_by(Instance.id)]


def get_instance(tenant: Tenant, instance_id: int) -> dict:
    return instance_view(_owned(Instance, instance_id, tenant, "instance"))


def create_instance(tenant: Tenant, body: InstanceCreate) -> dict:
    pace = body.model_dump(
        include={"min_interval", "max_interval", "rest_every", "rest_seconds", "daily_cap", "warmup_days"}, exclude_none=True
    )
    row = tenants.create_instance(
        tenant, name=body.name, provider=body.provider, url=body.url, token=body.token,
        messages_per_minute=body.messages_per_minute, options=body.options, **pace,
    )
    return instance_view(row)


def update_instance(tenant: Tenant, instance_id: int, body: InstancePatch) -> dict:
    instance = _owned(Instance, instance_id, tenant, "instance")
    return instance_view(tenants.update_instance(instance, **body.model_dump(exclude_none=True)))


# --- campaigns ---------------------------------------------------------------------

def list_campaigns(tenant: Tenant, query: CampaignsQuery) -> dict:
    where = Campaign.tenant == tenant.id
    if query.type:
        where &= Campaign.type == query.type
    if query.status:
        where &= Queue.status == query.status
    if query.external_id:
        where &= Campaign.external_id == query.external_id
    if query.created_from:
        where &= Campaign.created_at >= datetime.combine(query.created_from, datetime.min.time())
    if query.created_to:
        where &= Campaign.created_at < _day_after(query.created_to)
    base = Campaign.select(Campaign, Queue).join(Queue, on=(Queue.campaign == Campaign.id)).where(where)
    total = base.count()
    rows = base.order_by(Campaign.created_at.desc()).paginate(query.page, query.page_size)
    return {
        "count": total,
        "page": query.page,
        "page_size": query.page_size,
        "results": [
            {
                "billing_campaign_id": str(c.id), "external_id": c.external_id, "type": c.type,
                "created_at": as_utc_iso(c.created_at), "queue_id": str(c.queue.id), "status": c.queue.status,
                "total_contacts": c.queue.total_contacts, "rejected_contacts": c.queue.rejected_contacts,
                "callback_url": c.callback_url, "metadata": c.metadata,
            }
            for c in rows
        ],
    }


# --- settings -------------------------------------------------------------------------

def settings_view(tenant: Tenant) -> dict:
    return {
        "name": tenant.name,
        "timezone": tenant.timezone,
        "business_hours": tenant.business_hours,
        "holidays": tenant.holidays,
        "extra_holidays": tenant.extra_holidays,
        "recipient_timezone": tenant.recipient_timezone,
        "daily_cap": tenant.daily_cap,
        "max_attempts": tenant.max_attempts,
        "allow_private_callbacks": tenant.allow_private_callbacks,
        "auto_reply": tenant.auto_reply,
        "api_hourly_limit": tenant.api_hourly_limit,
        "daily_message_limit": tenant.daily_message_limit,
        "callback_secret": tenant.callback_secret,
        # Set by the operator: the highest value of each limit this tenant's admins may set.
        "ceilings": ceilings.ceilings_of(tenant),
    }


def update_settings(tenant: Tenant, body: SettingsPatch, *, operator: bool = False) -> dict:
    """Change the tenant's settings.

    Parameters:
      tenant: the tenant.
      body: the changes.
      operator: the operator asks: operator-only switches and values above
        the ceilings are allowed; a tenant admin gets 403 for them.
    """
    changes = body.model_dump(exclude_none=True)
    if not operator:
        ceilings.check_tenant_admin_settings(tenant, changes)
    return settings_view(tenants.update_tenant(tenant, **changes))


def update_ceilings(tenant: Tenant, body: CeilingsPatch) -> dict:
    """The operator sets the tenant's ceilings (null: back to the default)."""
    ceilings.set_ceilings(tenant, body.model_dump(exclude_unset=True))
    return settings_view(Tenant.get_by_id(tenant.id))


def rotate_secret(tenant: Tenant) -> dict:
    tenants.rotate_callback_secret(tenant)
    return settings_view(Tenant.get_by_id(tenant.id))


# --- stats ------------------------------------------------------------------------------

def _day_after(day: date) -> datetime:
    """The first moment after ``day`` (naive UTC), the end of a date filter;
    after the last day a date holds (9999-12-31), the last moment there is.

    Parameters:
      day: the filter's last day, included.
    """
    if day >= date.max:
        return datetime.max
    return datetime.combine(day + timedelta(days=1), datetime.min.time())


def stats(tenant: Tenant, query: StatsQuery) -> dict:
    """Counts per UTC day and message type: sent, delivered, read, failed,
    replied, opted out."""
    today = utcnow().date()
    last = query.date_to or today
    first = query.date_from or date.fromordinal(max(1, last.toordinal() - (DEFAULT_STATS_DAYS - 1)))  # not before year 1
    if first > last:
        raise InvalidRequest("'from' is after 'to'")
    if (last - first).days >= MAX_STATS_DAYS:
        raise InvalidRequest(f"at most {MAX_STATS_DAYS} days at once")
    start, end = datetime.combine(first, datetime.min.time()), _day_after(last)
    table: dict[tuple[str, str], dict] = {}

    def add(day, kind: str, metric: str, count: int) -> None:
        key = (str(day)[:10], kind)
        row = table.setdefault(key, {"day": key[0], "type": kind, "sent": 0, "delivered": 0, "read": 0, "failed": 0,
                                     "replied": 0, "opted_out": 0})
        row[metric] += count

    def count_by_day(stamp, metric: str, *extra) -> None:
        day = fn.date(stamp)
        rows = (
            Contact.select(day.alias("day"), Campaign.type, fn.COUNT(Contact.id))
            .join(Campaign, on=(Contact.campaign == Campaign.id))
            .where((Contact.tenant == tenant.id) & (stamp >= start) & (stamp < end), *extra)
            .group_by(day, Campaign.type)
            .tuples()
        )
        for row_day, kind, count in rows:
            add(row_day, kind, metric, count)

    count_by_day(Contact.sent_at, "sent")
    count_by_day(Contact.delivered_at, "delivered")
    count_by_day(Contact.read_at, "read")
    count_by_day(Contact.finished_at, "failed", Contact.status == ContactStatus.FAILED)
    count_by_day(Contact.finished_at, "opted_out", Contact.status == ContactStatus.OPTED_OUT)
    replied_day = fn.date(InboundMessage.received_at)
    for row_day, kind, count in (
        InboundMessage.select(replied_day, Campaign.type, fn.COUNT(InboundMessage.id))
        .join(Contact, on=(InboundMessage.contact == Contact.id))
        .join(Campaign, on=(Contact.campaign == Campaign.id))
        .where((InboundMessage.tenant == tenant.id) & (InboundMessage.received_at >= start) & (InboundMessage.received_at < end))
        .group_by(replied_day, Campaign.type)
        .tuples()
    ):
        add(row_day, kind, "replied", count)
    rows = sorted(table.values(), key=lambda r: (r["day"], r["type"]))
    totals = {m: sum(r[m] for r in rows) for m in ("sent", "delivered", "read", "failed", "replied", "opted_out")}
    return {"from": first.isoformat(), "to": last.isoformat(), "totals": totals,
            "opted_out_phones": OptOut.select().where(OptOut.tenant == tenant.id).count(), "days": rows}


def list_tenants() -> list[dict]:
    return [{"id": t.id, "name": t.name, "timezone": t.timezone, "created_at": as_utc_iso(t.created_at)}
            for t in Tenant.select().order_by(Tenant.id)]
