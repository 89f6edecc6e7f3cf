"""Message templates and their variations (varied wording avoids bans)."""
from __future__ import annotations

import peewee

from billing.adapters.db import write_transaction
from billing.adapters.models import Template, Tenant, Variation
from billing.domain import message_types
from billing.domain.rotation import STRATEGIES
from billing.domain.templating import TemplateSyntaxError, compile_template
from billing.errors import Conflict, InvalidRequest

#: A WhatsApp text message holds at most 65,536 characters; templates stay far below.
MAX_VARIATION_LENGTH = 4_096


def check_type(template_type: str) -> str:
    """Return ``template_type`` when it is a declared message type.

    Raises:
      InvalidRequest: no message type of that name is declared.
    """
    return message_types.get(template_type).name


def check_variation(text: str, *, index: int = 0) -> str:
    """Validate one variation's text; return it."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest(f"variation {index + 1} is empty")
    if len(text) > MAX_VARIATION_LENGTH:
        raise InvalidRequest(f"variation {index + 1} is longer than {MAX_VARIATION_LENGTH} characters")
    try:
        compile_template(text)
    except TemplateSyntaxError as exc:
        raise InvalidRequest(f"variation {index + 1}: {exc}") from None
    return text


def create_template(
    tenant: Tenant,
    *,
    type: str,
    name: str,
    variations: list,
    strategy: str = "random",
) -> Template:
    """Create a template with its variations.

    Parameters:
      tenant: the owner.
      type: a declared message type (:mod:`billing.domain.message_types`).
      name: unique per tenant and type.
      variations: texts, or dicts ``{"text": ..., "weight": n}``.
      strategy: ``random``, ``sequential`` (least used first) or ``weighted``.
    """
    check_type(type)
    if strategy not in STRATEGIES:
        raise InvalidRequest(f"strategy must be one of {', '.join(STRATEGIES)}, got '{strategy}'")
    name = (name or "").strip()
    if not name:
        raise InvalidRequest("template name is empty")
    if not variations:
        raise InvalidRequest("a template needs at least one variation")
    rows = []
    for index, item in enumerate(variations):
        text, weight = (item.get("text"), item.get("weight", 1)) if isinstance(item, dict) else (item, 1)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
            raise InvalidRequest(f"variation {index + 1}: weight must be a whole number >= 1")
        rows.append((check_variation(text, index=index), weight))
    with write_transaction():
        try:
            template = Template.create(tenant=tenant, type=type, name=name, strategy=strategy)
        except peewee.IntegrityError:
            raise Conflict(f"a {type} template named '{name}' already exists") from None
        for position, (text, weight) in enumerate(rows):
            Variation.create(template=template, position=position, text=text, weight=weight)
    return template


def active_template(tenant_id: int, template_type: str) -> Template | None:
    """The template used for new campaigns of this type: the newest active one."""
    return (
        Template.select()
        .where((Template.tenant == tenant_id) & (Template.type == template_type) & (Template.is_active == True))  # noqa: E712
        .order_by(Template.created_at.desc(), Template.id.desc())
        .first()
    )


def active_variations(template: Template) -> list[Variation]:
    return list(
        Variation.select()
        .where((Variation.template == template) & (Variation.is_active == True))  # noqa: E712
        .order_by(Variation.position, Variation.id)
    )

