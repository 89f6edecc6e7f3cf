"""Gateways' webhooks over real HTTP into the running app, on real SQLite and
PostgreSQL: authentication, idempotency, ack order, replies, opt-outs, and the
number check that finds accounts registered without the mobile 9."""
from __future__ import annotations

from datetime import timedelta

import pytest
import requests

from billing import campaigns, dispatch, inbound, sending, tenants
from billing.adapters.db import write_transaction
from billing.adapters.models import CallbackDelivery, Contact, InboundMessage, Instance, OptOut, Queue
from billing.clock import utcnow
from billing.domain.states import ContactStatus, QueueStatus
from tests.factories import LiveApp, contact, make_tenant, phones
from tests.fakes import without_nine
from tests.fakes.evolution import FakeEvolution
from tests.fakes.waha import FakeWaha

RECEIVER = "http://127.0.0.1:9/callbacks"  # never called here: deliveries are only recorded


@pytest.fixture
def app(db):
    live = LiveApp(db)
    yield live
    live.close()


def _setup(provider: str, fake) -> tuple:
    setup = make_tenant(allow_private_callbacks=True)
    Instance.update(is_active=False).execute()  # only the gateway instance sends
    instance = tenants.create_instance(
        setup.tenant, name="billing" if provider == "evolution" else "default", provider=provider, url=fake.url,
        token="k", options={"typing_ms": 0, "typing": False}, min_interval=0.01, max_interval=0.01,
    )
    return setup, instance


def _send_all(setup, count: int, *, external_id: str = "w1", start: int = 0) -> list[Contact]:
    created = campaigns.create_campaign(
        setup.tenant, template_type="overdue",
        request={"external_id": external_id, "callback_url": RECEIVER,
                 "contacts": [contact(p) for p in phones(count, start=start)]},
    )
    plan = dispatch.plan_dispatch(created.queue_id, horizon=timedelta(seconds=60), batch_size=100)
    for contact_id, _ in plan.sends:
        sending.send_one(contact_id)
    return list(Contact.select().where(Contact.queue == created.queue_id).order_by(Contact.position))


def _deliveries(event: str) -> int:
    return CallbackDelivery.select().where(CallbackDelivery.event == event).count()


def test_evolution_acks_move_forward_only_and_duplicates_do_nothing(app):
    with FakeEvolution(api_key="k") as fake:
        setup, instance = _setup("evolution", fake)
        first, second = _send_all(setup, 2)
        assert first.status == ContactStatus.SENT and first.provider_message_id.startswith("3EB0")
        url = f"{app.base}/webhooks/evolution/{instance.id}/{instance.webhook_secret}"
        # read arrives before delivered (it happens); then delivered, then read again
        for status in ("READ", "DELIVERY_ACK", "READ", "SERVER_ACK"):
            assert fake.post_ack(url, message_id=first.provider_message_id, status=status).status_code == 200
        fake.post_ack(url, message_id=second.provider_message_id, status="DELIVERY_ACK")
        fake.post_ack(url, message_id=second.provider_message_id, status="DELIVERY_ACK")
    first, second = Contact.get_by_id(first.id), Contact.get_by_id(second.id)
    assert first.status == ContactStatus.READ and first.read_at and first.delivered_at
    assert second.status == ContactStatus.DELIVERED
    assert (_deliveries("contact.read"), _deliveries("contact.delivered"), _deliveries("contact.sent")) == (1, 1, 2)
    assert sorted(app.callbacks) == sorted(d.id for d in CallbackDelivery.select().where(CallbackDelivery.event.in_(("contact.read", "contact.delivered"))))


def test_evolution_webhook_needs_its_secret(app):
    with FakeEvolution(api_key="k") as fake:
        setup, instance = _setup("evolution", fake)
        (sent,) = _send_all(setup, 1)
        bad = fake.post_ack(f"{app.base}/webhooks/evolution/{instance.id}/wrong", message_id=sent.provider_message_id, status="READ")
        unknown = fake.post_ack(f"{app.base}/webhooks/evolution/999/{instance.webhook_secret}", message_id="x", status="READ")
    assert bad.status_code == 401 and bad.json()["success"] is False
    assert (unknown.status_code, unknown.json()) == (401, bad.json())  # does not tell which ids exist
    assert Contact.get_by_id(sent.id).status == ContactStatus.SENT


def test_waha_webhooks_are_verified_by_hmac(app):
    with FakeWaha(api_key="k") as fake:
        setup, instance = _setup("waha", fake)
        (sent,) = _send_all(setup, 1)
        url = f"{app.base}/webhooks/waha/{instance.id}"
        assert fake.post_ack(url, message_id=sent.provider_message_id, ack=3, secret="not-the-secret").status_code == 401
        assert fake.post_ack(url, message_id=sent.provider_message_id, ack=3).status_code == 401  # unsigned
        assert Contact.get_by_id(sent.id).status == ContactStatus.SENT
        assert fake.post_ack(url, message_id=sent.provider_message_id, ack=3, secret=instance.webhook_secret).status_code == 200
    assert Contact.get_by_id(sent.id).status == ContactStatus.READ


def test_a_reply_is_stored_once_classified_and_an_opt_out_holds_for_later_campaigns(app):
    with FakeEvolution(api_key="k") as fake:
        setup, instance = _setup("evolution", fake)
        (sent,) = _send_all(setup, 1)
        url = f"{app.base}/webhooks/evolution/{instance.id}/{instance.webhook_secret}"
        question = fake.post_inbound(url, phone=sent.phone, text="Qual a chave pix?")
        assert question.status_code == 200
        body = {"event": "messages.upsert", "instance": "billing", "data": {
            "key": {"remoteJid": f"{sent.phone[1:]}@s.whatsapp.net", "fromMe": False, "id": "3EB0STOP"},
            "message": {"conversation": "PARAR"}}}
        for _ in range(3):  # the gateway retries
            assert requests.post(url, json=body, timeout=5).status_code == 200
    assert [(m.text, m.intent, m.contact_id) for m in InboundMessage.select().order_by(InboundMessage.id)] == [
        ("Qual a chave pix?", "question", sent.id), ("PARAR", "opt_out", sent.id)]
    assert OptOut.select().where(OptOut.phone == sent.phone).count() == 1
    assert (_deliveries("contact.replied"), _deliveries("contact.opted_out")) == (2, 1)
    replied = [d.payload["data"] for d in CallbackDelivery.select().where(CallbackDelivery.event == "contact.replied")]
    assert sorted(d["intent"] for d in replied) == ["opt_out", "question"]

    later = campaigns.create_campaign(
        setup.tenant, template_type="overdue",
        request={"external_id": "later", "contacts": [contact(sent.phone), contact(phones(1, start=50)[0])]},
    )
    rows = list(Contact.select().where(Contact.queue == later.queue_id).order_by(Contact.position))
    assert [(c.status, c.reason) for c in rows] == [(ContactStatus.OPTED_OUT, "opted out"), (ContactStatus.PENDING, "")]
    assert later.total_contacts == 2


def test_an_opt_out_stops_pending_contacts_of_that_phone_at_once(app):
    setup = make_tenant(allow_private_callbacks=True)
    target = phones(1)[0]
    created = campaigns.create_campaign(setup.tenant, template_type="overdue", request={"external_id": "p", "contacts": [contact(target)]})
    with write_transaction():
        inbound.opt_out(setup.tenant.id, target, reason="SAIR", now=utcnow())
    assert Contact.get(Contact.queue == created.queue_id).status == ContactStatus.OPTED_OUT
    assert dispatch.plan_dispatch(created.queue_id, horizon=timedelta(seconds=60), batch_size=10).sends == []
    assert Queue.get_by_id(created.queue_id).status == QueueStatus.COMPLETED


def test_connection_events_pause_and_resume_the_tenants_queues(app):
    with FakeWaha(api_key="k") as fake:
        setup, instance = _setup("waha", fake)
        created = campaigns.create_campaign(setup.tenant, template_type="overdue",
                                            request={"external_id": "c", "contacts": [contact(p) for p in phones(3)]})
        Queue.update(status=QueueStatus.PROCESSING).execute()
        url = f"{app.base}/webhooks/waha/{instance.id}"
        Instance.update(health="connected").where(Instance.id == instance.id).execute()
        assert fake.post_session_status(url, status="STOPPED", secret=instance.webhook_secret).status_code == 200
        assert Queue.get_by_id(created.queue_id).status == QueueStatus.INSTANCE_DOWN
        fake.post_session_status(url, status="STOPPED", secret=instance.webhook_secret)  # again: still down, nothing new
        assert app.started == []
        fake.post_session_status(url, status="WORKING", secret=instance.webhook_secret)
    assert Queue.get_by_id(created.queue_id).status == QueueStatus.PROCESSING
    assert app.started == [created.queue_id]


def test_a_mobile_registered_without_its_9_is_reached_and_its_reply_matched(app):
    with FakeEvolution(api_key="k") as fake:
        setup, instance = _setup("evolution", fake)
        target = phones(1)[0]  # +5511910000000, with the 9
        fake.registered_without_nine(target)
        (sent,) = _send_all(setup, 1)
        assert sent.chat_id == f"{without_nine(target[1:])}@s.whatsapp.net"
        assert [(m.chat_id, m.reached) for m in fake.messages] == [(sent.chat_id, True)]
        url = f"{app.base}/webhooks/evolution/{instance.id}/{instance.webhook_secret}"
        fake.post_inbound(url, phone="+" + without_nine(target[1:]), text="já paguei ontem")
    reply = InboundMessage.get()
    assert (reply.contact_id, reply.phone, reply.intent) == (sent.id, target, "paid")


def test_a_number_not_on_whatsapp_fails_after_one_attempt_without_a_send(app):
    with FakeEvolution(api_key="k") as fake:
        setup, _ = _setup("evolution", fake)
        fake.not_on_whatsapp(phones(1)[0])
        (row,) = _send_all(setup, 1)
    assert (row.status, row.reason, row.attempts) == (ContactStatus.FAILED, "number is not on WhatsApp", 1)
    assert fake.messages == []


def test_a_payment_question_is_answered_once_with_the_pix_code(app):
    with FakeEvolution(api_key="k") as fake:
        setup, instance = _setup("evolution", fake)
        tenants.update_tenant(setup.tenant, auto_reply=True)
        created = campaigns.create_campaign(
            setup.tenant, template_type="overdue",
            request={"external_id": "pix", "contacts": [contact(phones(1)[0], codigo_pix="00020126***6304ABCD")]},
        )
        (contact_id, _), = dispatch.plan_dispatch(created.queue_id, horizon=timedelta(seconds=60), batch_size=5).sends
        sending.send_one(contact_id)
        url = f"{app.base}/webhooks/evolution/{instance.id}/{instance.webhook_secret}"
        fake.post_inbound(url, phone=phones(1)[0], text="como faço pra pagar? manda o pix")
        (inbound_id,) = app.jobs.answered
        assert inbound.send_auto_reply(inbound_id) is True
        assert inbound.send_auto_reply(inbound_id) is False  # a redelivered message answers nothing more
        answers = [m.text for m in fake.messages][1:]
    assert answers == ["Segue o PIX copia e cola:\n00020126***6304ABCD"]
