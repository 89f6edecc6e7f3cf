"""Reminders that contradict their type are rejected per contact, with a
reason, as invalid phones are: an ``overdue`` reminder for a bill not yet past
due (in the tenant's time zone), an ``upcoming`` one for a bill already past
due, a negative or non-finite amount. ``notification`` has no due-date rule.

The rules alone first (no database), then through create_campaign and HTTP on
real SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import date, datetime

import pytest

from billing import campaigns, clock
from billing.adapters.models import Contact
from billing.campaigns import amount_problem
from billing.config import Settings
from billing.domain.duedates import type_contradiction
from billing.domain.states import ContactStatus
from billing.errors import InvalidRequest
from tests.factories import RecordedJobs, contact, make_tenant, phones
from web import create_app

TODAY = date(2026, 11, 29)


# --- the rules -------------------------------------------------------------------

@pytest.mark.parametrize("template_type, due, wrong", [
    ("overdue", date(2026, 11, 28), False),
    ("overdue", TODAY, True),              # not late yet on its due day
    ("overdue", date(2027, 1, 10), True),  # the "venceu há 0 dias" of a 2027 bill
    ("upcoming", TODAY, False),            # "vence hoje"
    ("upcoming", date(2027, 1, 10), False),
    ("upcoming", date(2026, 11, 28), True),
    ("notification", date(2020, 1, 1), False),
    ("notification", date(2030, 1, 1), False),
])
def test_the_due_date_must_fit_the_type(template_type, due, wrong):
    reason = type_contradiction(template_type=template_type, due=due, today=TODAY)
    assert (reason is not None) == wrong
    if wrong:
        assert template_type in reason and f"{due:%d/%m/%Y}" in reason and "29/11/2026" in reason


def test_the_rule_reads_dates_as_people_write_them():
    assert type_contradiction(template_type="overdue", due="10/01/2027", today=TODAY)
    assert type_contradiction(template_type="overdue", due="2026-11-28", today=TODAY) is None


@pytest.mark.parametrize("value, problem", [
    (150.0, None), (0, None), ("R$ 150,00", None), ("cento e cinquenta", None), (None, None),
    (-0.01, "valor is negative"), (-150, "valor is negative"),
    ("-150,00", "valor is negative"), ("R$ -150,00", "valor is negative"), ("-R$ 150,00", "valor is negative"),
    ("R$ \u2212150,00", "valor is negative"),
    (float("nan"), "valor is not a finite number"), (float("inf"), "valor is not a finite number"),
    (float("-inf"), "valor is not a finite number"), ("NaN", "valor is not a finite number"),
    ("Infinity", "valor is not a finite number"),
])
def test_amounts_are_finite_and_not_negative(value, problem):
    found = amount_problem("valor", value)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem), found


# --- create_campaign -------------------------------------------------------------

def test_contradicting_contacts_are_rejected_the_others_sent(db):
    setup = make_tenant()
    numbers = phones(6)
    batch = [
        contact(numbers[0], data_vencimento="2026-11-20"),                 # ok
        contact(numbers[1], data_vencimento="10/01/2027"),                 # future: not overdue
        contact(numbers[2], data_vencimento="2026-11-20", valor=-10),      # negative
        contact(numbers[3], data_vencimento="2026-11-20", valor_total="R$ -5,00"),
        contact(numbers[4]),                                               # 2025-01-15: ok
        contact(numbers[1], data_vencimento="2026-11-01"),                 # the phone of a rejected one: ok
    ]
    created = campaigns.create_campaign(setup.tenant, template_type="overdue",
                                        request={"external_id": "mix", "contacts": batch},
                                        now=datetime(2026, 11, 29, 15, 0))
    assert created.total_contacts == 3
    assert [(r.index, r.reason) for r in created.rejected] == [
        (1, "overdue reminder for an invoice not yet past due (data_vencimento 10/01/2027, today 29/11/2026)"),
        (2, "valor is negative (-10)"),
        (3, "valor_total is negative (R$ -5,00)"),
    ]
    stored = {c.position: (c.status, c.reason, c.message) for c in Contact.select()}
    assert stored[1][:2] == (ContactStatus.REJECTED, created.rejected[0].reason) and stored[1][2] == ""
    assert {p for p, (status, _, _) in stored.items() if status == ContactStatus.PENDING} == {0, 4, 5}
    assert all("venceu" not in message or "há 0 dias" not in message for _, _, message in stored.values())


def test_today_is_the_tenants_date(db):
    """01:30 UTC on 30 November is still 29 November in São Paulo (UTC-3): a
    bill due on the 29th is due today there, so not overdue yet; it is in
    Lisbon, where the 30th has begun."""
    just_after_utc_midnight = datetime(2026, 11, 30, 1, 30)
    body = {"contacts": [contact(data_vencimento="2026-11-29")]}
    sao_paulo = make_tenant("sp", timezone="America/Sao_Paulo")
    with pytest.raises(InvalidRequest) as info:
        campaigns.create_campaign(sao_paulo.tenant, template_type="overdue", request={**body, "external_id": "a"},
                                  now=just_after_utc_midnight)
    assert "not yet past due" in info.value.errors[0]["reason"]
    upcoming = campaigns.create_campaign(sao_paulo.tenant, template_type="upcoming",
                                         request={**body, "external_id": "b"}, now=just_after_utc_midnight)
    assert upcoming.total_contacts == 1 and not upcoming.rejected
    lisbon = make_tenant("pt", timezone="Europe/Lisbon")
    overdue = campaigns.create_campaign(lisbon.tenant, template_type="overdue", request={**body, "external_id": "c"},
                                        now=just_after_utc_midnight)
    assert overdue.total_contacts == 1 and not overdue.rejected


def test_notifications_have_no_due_date_rule(db):
    setup = make_tenant()
    created = campaigns.create_campaign(
        setup.tenant, template_type="notification", now=datetime(2026, 11, 29, 15, 0),
        request={"external_id": "n", "contacts": [contact(p, data_vencimento=d, mensagem="Aviso")
                                                  for p, d in zip(phones(2), ("2020-01-01", "2030-01-01"))]},
    )
    assert created.total_contacts == 2 and not created.rejected


# --- over HTTP -------------------------------------------------------------------

@pytest.fixture
def api(db):
    client = create_app(Settings(database_url=db), jobs=RecordedJobs()).test_client()
    client.setup = make_tenant()
    client.headers = {"X-Billing-API-Key": client.setup.api_key}
    return client


def _at_noon(api, path: str, **kwargs):
    with clock.frozen(lambda: datetime(2026, 11, 29, 15, 0)):  # noon in São Paulo
        return api.post(path, headers=api.headers, **kwargs)


def test_http_lists_the_rejected_reminders_and_sends_the_others(api):
    good, future, late = phones(3)
    body = {"external_id": "u-1", "contacts": [
        contact(good, data_vencimento="2026-12-10"),
        contact(future, data_vencimento="2026-11-29"),          # due today: "vence hoje", fine
        contact(late, data_vencimento="28/11/2026"),            # already past due
    ]}
    response = _at_noon(api, "/api/v1/billing/send/upcoming", json=body)
    assert response.status_code == 200, response.json
    assert response.json["total_contacts"] == 2 and response.json["rejected_contacts"] == 1
    assert response.json["rejected"] == [{
        "index": 2, "telefone": late,
        "reason": "upcoming reminder for an invoice already past due (data_vencimento 28/11/2026, today 29/11/2026)",
    }]
    listed = api.get(f"/api/v1/billing/campaign/{response.json['billing_campaign_id']}/contacts?status=rejected",
                     headers=api.headers).json["results"]
    assert [(c["index"], c["reason"]) for c in listed] == [(2, response.json["rejected"][0]["reason"])]


def test_http_an_overdue_batch_entirely_in_the_future_is_422(api):
    body = {"external_id": "o-1", "contacts": [contact(p, data_vencimento="2027-01-10") for p in phones(2)]}
    response = _at_noon(api, "/api/v1/billing/send/overdue", json=body)
    assert response.status_code == 422 and response.json["message"] == "no contact can be sent"
    assert [e["index"] for e in response.json["errors"]] == [0, 1]
    assert all("not yet past due" in e["reason"] for e in response.json["errors"])


def test_http_non_finite_and_negative_amounts(api):
    """JSON has no NaN, but Python's parser (and some ERPs) accept it."""
    one, two, three = phones(3)
    raw = ('{"external_id": "m-1", "contacts": ['
           f'{{"nome": "A", "telefone": "{one}", "valor": NaN, "data_vencimento": "2026-11-01"}},'
           f'{{"nome": "B", "telefone": "{two}", "valor": -1e3, "data_vencimento": "2026-11-01"}},'
           f'{{"nome": "C", "telefone": "{three}", "valor": 10, "valor_total": Infinity, "data_vencimento": "2026-11-01"}}'
           ']}')
    response = _at_noon(api, "/api/v1/billing/send/overdue", data=raw, content_type="application/json")
    assert response.status_code == 422, response.json
    assert [(e["index"], e["reason"]) for e in response.json["errors"]] == [
        (0, "valor is not a finite number"), (1, "valor is negative (-1000.0)"), (2, "valor_total is not a finite number"),
    ]
