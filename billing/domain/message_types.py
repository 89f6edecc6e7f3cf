"""The kinds of message, each declared once.

A :class:`MessageType` holds everything the code decides by the kind of a
message: its name (in URLs, templates, campaigns and key scopes), its
Portuguese label, whether business hours bind it, the rule its due date must
follow, the fields every contact of it must carry, and the wordings a new
tenant starts with. Adding a kind is adding one declaration to
:data:`MESSAGE_TYPES`; the API's enums, the CLI's choices, API-key scopes,
template checks, the hours check and the send path all read it from there.

Optional variables in the default wordings sit inside ``{{#if}}`` so a contact
without a PIX code or a payment link still gets a complete message.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from billing.errors import InvalidRequest


class DueDateRule(enum.Enum):
    """Where a message's due date must fall, "today" being the tenant's date."""

    #: Strictly before today: on its due day a bill is not late yet
    #: ("venceu há 0 dias" would be false).
    PAST_DUE = "past_due"
    #: Today or later ("vence hoje" included).
    NOT_YET_DUE = "not_yet_due"


@dataclass(frozen=True)
class MessageType:
    """One kind of message.

    Parameters:
      name: the identifier: ``send/<name>``, a template's and a campaign's
        ``type``, an API key's scope.
      label: the Portuguese name shown to people.
      hours_bound: sent only inside the tenant's business hours and never on
        a holiday (False: at any hour).
      due_date_rule: where ``data_vencimento`` must fall (None: anywhere).
      required_variables: fields every contact of this kind must carry,
        whatever its template prints; a contact without one is rejected.
      default_variations: the wordings a new tenant's ``Padrão`` template of
        this kind starts with.
    """

    name: str
    label: str
    hours_bound: bool
    due_date_rule: DueDateRule | None
    required_variables: tuple[str, ...]
    default_variations: tuple[str, ...]


#: Appended to every default charge wording: the optional ways to pay.
_PAYMENT = (
    "{{#if codigo_pix}}\n\nPIX copia e cola:\n{{codigo_pix}}{{/if}}"
    "{{#if link_pagamento}}\n\nPague pelo link: {{link_pagamento}}{{/if}}"
)

#: What a charge is about: without an amount and a due date it says nothing,
#: and the due-date rule could not be checked.
_CHARGE_VARIABLES = ("valor", "data_vencimento")

OVERDUE = MessageType(
    name="overdue",
    label="Cobrança atrasada",
    hours_bound=True,
    due_date_rule=DueDateRule.PAST_DUE,
    required_variables=_CHARGE_VARIABLES,
    default_variations=(
        "Olá {{nome_cliente}}, tudo bem? Identificamos que a fatura{{#if numero_fatura}} {{numero_fatura}}{{/if}} "
        "no valor de {{valor}}, vencida em {{data_vencimento}}, está em aberto há {{dias_atraso}} dia(s)." + _PAYMENT,
        "Oi {{nome_cliente}}! Passando para lembrar que o pagamento de {{valor}} venceu em {{data_vencimento}} "
        "({{dias_atraso}} dia(s) de atraso). Se já pagou, desconsidere esta mensagem." + _PAYMENT,
        "{{nome_cliente}}, sua fatura{{#if numero_fatura}} nº {{numero_fatura}}{{/if}} de {{valor}} está vencida "
        "desde {{data_vencimento}}. Regularize para evitar encargos." + _PAYMENT,
        "Prezado(a) {{nome_cliente}}, consta em nosso sistema um débito de {{valor}} com vencimento em "
        "{{data_vencimento}}, há {{dias_atraso}} dia(s). Qualquer dúvida, responda esta mensagem." + _PAYMENT,
        "Olá, {{nome_cliente}}. Não identificamos o pagamento de {{valor}} (vencimento {{data_vencimento}}). "
        "Podemos ajudar? Responda aqui." + _PAYMENT,
    ),
)

UPCOMING = MessageType(
    name="upcoming",
    label="Cobrança a vencer",
    hours_bound=True,
    due_date_rule=DueDateRule.NOT_YET_DUE,
    required_variables=_CHARGE_VARIABLES,
    default_variations=(
        "Olá {{nome_cliente}}! Sua fatura{{#if numero_fatura}} {{numero_fatura}}{{/if}} de {{valor}} vence em "
        "{{data_vencimento}}{{#if dias_para_vencer}} (daqui a {{dias_para_vencer}} dia(s)){{else}} (hoje){{/if}}."
        + _PAYMENT,
        "Oi {{nome_cliente}}, lembrete amigável: o pagamento de {{valor}} vence em {{data_vencimento}}." + _PAYMENT,
        "{{nome_cliente}}, para sua organização: fatura de {{valor}} com vencimento em {{data_vencimento}}." + _PAYMENT,
        "Prezado(a) {{nome_cliente}}, sua próxima fatura ({{valor}}) vence em {{data_vencimento}}. "
        "Evite atrasos pagando com antecedência." + _PAYMENT,
        "Olá, {{nome_cliente}}. Faltam {{dias_para_vencer}} dia(s) para o vencimento da sua fatura de {{valor}} "
        "({{data_vencimento}})." + _PAYMENT,
    ),
)

NOTIFICATION = MessageType(
    name="notification",
    label="Notificação",
    hours_bound=False,
    due_date_rule=None,
    # A notice may carry its whole text in a tenant's template: nothing is
    # required of every contact (the default wordings still need `mensagem`,
    # and rendering says so when it is missing).
    required_variables=(),
    default_variations=(
        "Olá {{nome_cliente}}! {{#if titulo}}*{{titulo}}*\n\n{{/if}}{{mensagem}}",
        "Oi {{nome_cliente}}, {{#if titulo}}{{titulo}}: {{/if}}{{mensagem}}",
        "{{nome_cliente}}, temos um aviso para você.{{#if titulo}} {{titulo}}.{{/if}}\n\n{{mensagem}}",
        "Prezado(a) {{nome_cliente}},{{#if titulo}} *{{titulo}}*{{/if}}\n{{mensagem}}",
        "Olá, {{nome_cliente}}. {{mensagem}}",
    ),
)

#: name -> declaration, in the order the API and the CLI list them. Read it
#: through :func:`names` and :func:`get`, when needed (never copy it at import
#: time): a declaration added later is then seen everywhere.
MESSAGE_TYPES: dict[str, MessageType] = {t.name: t for t in (OVERDUE, UPCOMING, NOTIFICATION)}


def names() -> tuple[str, ...]:
    """Every declared type's name, in declaration order."""
    return tuple(MESSAGE_TYPES)


def get(name: str) -> MessageType:
    """The declaration of ``name``.

    Parameters:
      name: a type's name, e.g. ``"overdue"`` (anything else a caller sent,
        such as a list read from a file, is no type).

    Raises:
      InvalidRequest: no type of that name is declared.
    """
    declared = MESSAGE_TYPES.get(name) if isinstance(name, str) else None
    if declared is None:
        raise InvalidRequest(f"unknown message type '{name}'; use {', '.join(names())}")
    return declared
