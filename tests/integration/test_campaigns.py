"""Creating campaigns on real SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import datetime

import pytest

from billing import campaigns
from billing.adapters.models import Campaign, Contact, Queue, Variation
from billing.domain.states import ContactStatus, QueueStatus
from billing.errors import DuplicateCampaign, InvalidRequest, PayloadTooLarge
from tests.factories import contact, make_tenant, phones


def test_creates_campaign_queue_and_contacts_in_one_go(db):
    setup = make_tenant()
    good = [contact(p, numero_fatura=f"F{i}") for i, p in enumerate(phones(5))]
    bad = [contact("123"), contact("+55 20 98765-4321"), contact(phones(1)[0])]  # short, bad DDD, duplicate
    created = campaigns.create_campaign(
        setup.tenant, template_type="overdue", request={"external_id": "inv-1", "contacts": good + bad},
        now=datetime(2025, 1, 20, 12, 0),
    )
    assert created.total_contacts == 5
    assert [(r.index, r.reason) for r in created.rejected] == [
        (5, "phone too short"),
        (6, created.rejected[1].reason),
        (7, "duplicate phone: same as contact 0"),
    ]
    assert "20" in created.rejected[1].reason
    queue = Queue.get_by_id(created.queue_id)
    assert queue.status == QueueStatus.PENDING and queue.total_contacts == 5 and queue.rejected_contacts == 3
    rows = list(Contact.select().where(Contact.queue == queue.id).order_by(Contact.position))
    assert [c.status for c in rows] == [ContactStatus.PENDING] * 5 + [ContactStatus.REJECTED] * 3
    first = rows[0]
    assert first.phone == phones(1)[0]
    assert "João Silva" in first.message and "R$ 150,00" in first.message and "15/01/2025" in first.message
    assert "há 5 dia(s)" in first.message  # dias_atraso, "today" being 2025-01-20
    # the caller's fields are stored as given; computed ones are derived again
    assert first.variables == {"telefone": good[0]["telefone"], "nome_cliente": "João Silva",
                               "valor": 150.0, "data_vencimento": "2025-01-15", "numero_fatura": "F0"}
    assert first.variation_id is not None
    # sequential strategy: five contacts, five variations, each used once
    assert sorted(v.times_used for v in Variation.select().join_from(Variation, Campaign, on=(Variation.template == Campaign.template)).where(Campaign.id == created.campaign_id)) == [1, 1, 1, 1, 1]
    assert rows[5].reason == "phone too short" and rows[5].phone == "123"


def test_repeated_external_id_is_a_conflict_and_creates_nothing(db):
    setup = make_tenant()
    body = {"external_id": "dup", "contacts": [contact()]}
    first = campaigns.create_campaign(setup.tenant, template_type="overdue", request=body)
    with pytest.raises(DuplicateCampaign) as info:
        campaigns.create_campaign(setup.tenant, template_type="upcoming", request=body)
    assert info.value.context == {"billing_campaign_id": first.campaign_id, "queue_id": first.queue_id}
    assert Campaign.select().count() == 1 and Contact.select().count() == 1


def test_same_external_id_in_two_tenants_is_fine(db):
    a, b = make_tenant("a"), make_tenant("b")
    body = {"external_id": "same", "contacts": [contact()]}
    campaigns.create_campaign(a.tenant, template_type="overdue", request=body)
    campaigns.create_campaign(b.tenant, template_type="overdue", request=body)
    assert Campaign.select().count() == 2


def test_missing_variable_rejects_the_contact_with_its_name(db):
    setup = make_tenant()
    created = campaigns.create_campaign(
        setup.tenant, template_type="notification",
        request={"external_id": "n1", "contacts": [{"nome": "Ana", "telefone": phones(1)[0]}, {"nome": "Bia", "telefone": phones(1, start=1)[0], "mensagem": "Aviso"}]},
    )
    assert created.total_contacts == 1
    assert [(r.index, r.reason) for r in created.rejected] == [(0, "missing variable 'mensagem'")]


def test_invalid_date_rejects_only_that_contact(db):
    setup = make_tenant()
    created = campaigns.create_campaign(
        setup.tenant, template_type="overdue",
        request={"external_id": "d1", "contacts": [contact(phones(1)[0], data_vencimento="31/02/2025"), contact(phones(1, start=1)[0])]},
    )
    assert created.total_contacts == 1
    assert created.rejected[0].index == 0 and "31/02/2025" in created.rejected[0].reason


def test_an_amount_that_is_not_a_number_rejects_the_contact(db):
    setup = make_tenant()
    created = campaigns.create_campaign(
        setup.tenant, template_type="overdue",
        request={"external_id": "nan", "contacts": [contact(phones(1)[0], valor=float("nan")), contact(phones(1, start=1)[0])]},
    )
    assert created.total_contacts == 1 and created.rejected[0].index == 0
    assert "valor" in created.rejected[0].reason or "amount" in created.rejected[0].reason


def test_nothing_sendable_is_an_error_and_stores_nothing(db):
    setup = make_tenant()
    with pytest.raises(InvalidRequest) as info:
        campaigns.create_campaign(setup.tenant, template_type="overdue", request={"external_id": "x", "contacts": [contact("abc")]})
    assert info.value.errors[0]["index"] == 0
    assert Campaign.select().count() == 0


@pytest.mark.parametrize(
    "body, field",
    [
        ({"contacts": [{"telefone": "1"}]}, "external_id"),
        ({"external_id": "x", "contacts": []}, "contacts"),
        ({"external_id": "x", "contacts": [{"nome": "a"}]}, "contacts.0.telefone"),
        ({"external_id": "x", "contacts": [{"telefone": "11999999999", "valor": {"a": 1}}]}, "contacts.0.valor"),
        ({"external_id": "x", "contacts": [{"telefone": "11999999999", "extra": [1, 2]}]}, "contacts.0.extra"),
        ({"external_id": "x", "contacts": [{"telefone": "11999999999"}], "callback_url": "ftp://x"}, "callback_url"),
        ({"external_id": "x", "contacts": [{"telefone": "11999999999"}], "unknown": 1}, "unknown"),
    ],
)
def test_malformed_requests_name_the_field(db, body, field):
    setup = make_tenant()
    with pytest.raises(InvalidRequest) as info:
        campaigns.create_campaign(setup.tenant, template_type="overdue", request=body)
    assert any(e["field"] == field for e in info.value.errors), info.value.errors
    assert Campaign.select().count() == 0


def test_template_type_in_body_must_match(db):
    setup = make_tenant()
    with pytest.raises(InvalidRequest, match="does not match"):
        campaigns.create_campaign(setup.tenant, template_type="overdue", request={"external_id": "x", "template_type": "upcoming", "contacts": [contact()]})


def test_contact_limit(db):
    setup = make_tenant()
    with pytest.raises(PayloadTooLarge):
        campaigns.create_campaign(setup.tenant, template_type="overdue", request={"external_id": "x", "contacts": [contact(p) for p in phones(3)]}, max_contacts=2)


def test_bulk_insert_of_ten_thousand_keeps_every_row(db):
    setup = make_tenant()
    created = campaigns.create_campaign(
        setup.tenant, template_type="overdue",
        request={"external_id": "big", "contacts": [contact(p, codigo_pix="0002***63,\"x\"\nline") for p in phones(10_000)]},
    )
    assert created.total_contacts == 10_000
    assert Contact.select().where(Contact.queue == created.queue_id).count() == 10_000
    sample = Contact.get((Contact.queue == created.queue_id) & (Contact.position == 9_999))
    # the PIX code survives CSV/COPY quoting intact (comma, quote, newline, asterisks)
    assert sample.variables["codigo_pix"] == "0002***63,\"x\"\nline"
    assert "0002***63" in sample.message
    assert sample.reason == "" and sample.chat_id == "" and sample.provider_message_id == ""
