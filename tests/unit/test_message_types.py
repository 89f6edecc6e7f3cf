"""Message types are declared once (billing/domain/message_types.py) and every
rule that depends on the kind of message reads the declaration: the names the
API, the CLI and key scopes accept, the hours check, the due-date rule."""
from __future__ import annotations

from datetime import date

import pytest
from pydantic import BaseModel, ValidationError

from billing import apikeys, windows
from billing.domain import message_types
from billing.domain.duedates import due_variables, type_contradiction
from billing.domain.message_types import MESSAGE_TYPES, DueDateRule, MessageType
from billing.domain.templating import compile_template
from billing.errors import InvalidRequest
from billing.schemas import MessageTypeName
from billing_cli.main import MessageTypeChoice

TODAY = date(2026, 11, 29)

#: A kind of message declared by a test only: late-fee warnings, bound by
#: business hours, about bills already past due.
LATE_FEE = MessageType(
    name="late_fee",
    label="Aviso de multa",
    hours_bound=True,
    due_date_rule=DueDateRule.PAST_DUE,
    required_variables=("valor",),
    default_variations=("{{nome_cliente}}, a multa de {{valor}} será cobrada.",),
)


@pytest.fixture
def late_fee(monkeypatch):
    """LATE_FEE declared for the test (one line: the registry entry)."""
    monkeypatch.setitem(MESSAGE_TYPES, LATE_FEE.name, LATE_FEE)
    return LATE_FEE


class _Body(BaseModel):
    type: MessageTypeName


def test_the_three_types_in_the_order_the_api_lists_them():
    assert message_types.names() == ("overdue", "upcoming", "notification")
    assert [message_types.get(n).label for n in message_types.names()] == [
        "Cobrança atrasada", "Cobrança a vencer", "Notificação"]
    assert [message_types.get(n).hours_bound for n in message_types.names()] == [True, True, False]


@pytest.mark.parametrize("name", ["spam", "", "OVERDUE", ["overdue"], None])
def test_an_undeclared_type_is_a_clear_invalid_request(name):
    with pytest.raises(InvalidRequest, match=r"unknown message type .*; use overdue, upcoming, notification$"):
        message_types.get(name)


@pytest.mark.parametrize("name", message_types.names())
def test_a_contact_with_its_types_required_fields_gets_every_default_wording(name):
    declared = message_types.get(name)
    fields = {"nome_cliente": "Ana", "data_vencimento": "10/12/2026", "valor": "R$ 10,00", "mensagem": "Aviso"}
    # A notice's default wordings print its `mensagem`, which it does not
    # require of contacts (a tenant's own notice may carry all its text).
    values = {"nome_cliente": "Ana", "mensagem": "Aviso", **{v: fields[v] for v in declared.required_variables}}
    if "data_vencimento" in values:
        values.update(due_variables(date(2026, 12, 10), today=TODAY))
    assert len(declared.default_variations) == 5
    rendered = [compile_template(text).render(values) for text in declared.default_variations]
    assert all(text.count("Ana") == 1 for text in rendered), rendered
    assert all(fields[v] in text for text in rendered for v in declared.required_variables)


def test_the_due_date_rule_is_read_from_the_declaration(late_fee):
    reason = type_contradiction(template_type="late_fee", due=TODAY, today=TODAY)
    assert reason == "late_fee reminder for an invoice not yet past due (data_vencimento 29/11/2026, today 29/11/2026)"
    assert type_contradiction(template_type="late_fee", due=date(2026, 11, 28), today=TODAY) is None
    with pytest.raises(InvalidRequest, match="unknown message type 'spam'"):
        type_contradiction(template_type="spam", due=TODAY, today=TODAY)


def test_business_hours_bind_the_types_declared_so(late_fee):
    assert [windows.hours_bound(n) for n in message_types.names()] == [True, True, False, True]
    assert windows.hours_bound("retired_type")  # a type no longer declared keeps the stricter rule


def test_request_fields_accept_a_type_declared_after_import_and_list_it_in_the_schema(late_fee):
    assert _Body(type="late_fee").type == "late_fee"
    assert _Body.model_json_schema()["properties"]["type"]["enum"] == ["overdue", "upcoming", "notification", "late_fee"]


def test_a_request_field_refuses_an_undeclared_type_as_a_literal_would():
    with pytest.raises(ValidationError) as caught:
        _Body(type="late_fee")
    (error,) = caught.value.errors()
    assert (error["type"], error["msg"]) == ("literal_error", "Input should be 'overdue', 'upcoming' or 'notification'")


def test_the_cli_offers_the_declared_types(late_fee):
    assert MessageTypeChoice().choices == ("overdue", "upcoming", "notification", "late_fee")
    assert MessageTypeChoice().convert("late_fee", None, None) == "late_fee"


@pytest.mark.parametrize("raw, stored", [
    (None, None),                                   # every type, later ones too
    ("", None),
    ("overdue", ["overdue"]),
    (" notification , overdue,notification", ["notification", "overdue"]),
    (["upcoming"], ["upcoming"]),
    ("overdue,upcoming,notification", ["overdue", "upcoming", "notification"]),  # an explicit list stays explicit
])
def test_key_scopes_are_null_for_all_or_the_list_given(raw, stored):
    assert apikeys.parse_types(raw) == stored


@pytest.mark.parametrize("raw", ["overdue,spam", [], ","])
def test_key_scopes_refuse_undeclared_or_no_types(raw):
    with pytest.raises(InvalidRequest, match=r"unknown template type\(s\)"):
        apikeys.parse_types(raw)


def test_a_key_may_be_scoped_to_a_type_declared_later(late_fee):
    assert apikeys.parse_types("late_fee") == ["late_fee"]
