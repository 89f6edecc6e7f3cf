"""The Portuguese templates a new tenant starts with: five wordings per type.

Optional variables sit inside ``{{#if}}`` so a contact without a PIX code or a
payment link still gets a complete message.
"""
from __future__ import annotations

_PAYMENT = (
    "{{#if codigo_pix}}\n\nPIX copia e cola:\n{{codigo_pix}}{{/if}}"
    "{{#if link_pagamento}}\n\nPague pelo link: {{link_pagamento}}{{/if}}"
)

OVERDUE = [
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
]

UPCOMING = [
    "Olá {{nome_cliente}}! Sua fatura{{#if numero_fatura}} {{numero_fatura}}{{/if}} de {{valor}} vence em "
    "{{data_vencimento}}{{#if dias_para_vencer}} (daqui a {{dias_para_vencer}} dia(s)){{else}} (hoje){{/if}}." + _PAYMENT,
    "Oi {{nome_cliente}}, lembrete amigável: o pagamento de {{valor}} vence em {{data_vencimento}}." + _PAYMENT,
    "{{nome_cliente}}, para sua organização: fatura de {{valor}} com vencimento em {{data_vencimento}}." + _PAYMENT,
    "Prezado(a) {{nome_cliente}}, sua próxima fatura ({{valor}}) vence em {{data_vencimento}}. "
    "Evite atrasos pagando com antecedência." + _PAYMENT,
    "Olá, {{nome_cliente}}. Faltam {{dias_para_vencer}} dia(s) para o vencimento da sua fatura de {{valor}} "
    "({{data_vencimento}})." + _PAYMENT,
]

NOTIFICATION = [
    "Olá {{nome_cliente}}! {{#if titulo}}*{{titulo}}*\n\n{{/if}}{{mensagem}}",
    "Oi {{nome_cliente}}, {{#if titulo}}{{titulo}}: {{/if}}{{mensagem}}",
    "{{nome_cliente}}, temos um aviso para você.{{#if titulo}} {{titulo}}.{{/if}}\n\n{{mensagem}}",
    "Prezado(a) {{nome_cliente}},{{#if titulo}} *{{titulo}}*{{/if}}\n{{mensagem}}",
    "Olá, {{nome_cliente}}. {{mensagem}}",
]

#: template type -> its five starting variations.
DEFAULT_TEMPLATES = {"overdue": OVERDUE, "upcoming": UPCOMING, "notification": NOTIFICATION}
