"""Business hours, holidays, daily caps and warm-up, with a controlled clock,
on real SQLite and PostgreSQL."""
from __future__ import annotations

import random
from datetime import datetime, timedelta

from billing import campaigns, clock, dispatch, pacing, queues, recovery, sending
from billing.adapters.models import Contact, Instance, Queue, SandboxMessage
from billing.domain.states import ContactStatus, QueueStatus
from tests.factories import contact, make_tenant, phones

HORIZON = timedelta(seconds=60)
EVERY_20_SECONDS = {"min_interval": 20, "max_interval": 20}


def _campaign(setup, count, *, template_type="overdue", external_id="c1", now=None):
    extra = {"mensagem": "Aviso"} if template_type == "notification" else {}
    return campaigns.create_campaign(
        setup.tenant, template_type=template_type, now=now,
        request={"external_id": external_id, "contacts": [contact(p, **extra) for p in phones(count)]},
    )


def _run(queue_id, *, now):
    """One dispatch at ``now`` and the sends it booked, each at its slot time."""
    with clock.frozen(lambda: now):
        plan = dispatch.plan_dispatch(queue_id, horizon=HORIZON, batch_size=100)
    for contact_id, slot in plan.sends:
        with clock.frozen(lambda: slot):
            sending.send_one(contact_id)
    return plan


def test_friday_evening_before_a_holiday_monday_resumes_tuesday_morning(db):
    # 7 September 2026 (Independência) is a Monday; São Paulo is UTC-3.
    setup = make_tenant(business_hours="mon-fri 08:00-18:00", holidays="BR", messages_per_minute=3, pace=EVERY_20_SECONDS)
    friday_1759 = datetime(2026, 9, 4, 20, 59)  # 17:59 local
    created = _campaign(setup, 10, now=friday_1759)
    assert created.estimated_duration_minutes > 4 * 24 * 60 - 24 * 60  # the long weekend is in the estimate

    plan = _run(created.queue_id, now=friday_1759)
    assert [(s - friday_1759).total_seconds() for _, s in plan.sends] == [0.0, 20.0, 40.0]  # 17:59:00, :20, :40; 18:00 is closed
    assert SandboxMessage.select().count() == 3
    assert plan.next_dispatch_in is not None and plan.next_dispatch_in <= 61

    friday_1800 = datetime(2026, 9, 4, 21, 0)
    assert _run(created.queue_id, now=friday_1800).sends == []
    queue = Queue.get_by_id(created.queue_id)
    tuesday_0800 = datetime(2026, 9, 8, 11, 0)
    assert (queue.status, queue.pause_reason, queue.resume_at) == (QueueStatus.PAUSED, "Fora do horário comercial", tuesday_0800)
    status = queues.queue_status(queue)
    assert status["resume_at"] == "2026-09-08T11:00:00.000Z" and status["status_display"] == "Pausado"

    for moment in (datetime(2026, 9, 5, 15, 0), datetime(2026, 9, 7, 12, 0), tuesday_0800 - timedelta(seconds=1)):
        assert recovery.resume_due_pauses(now=moment) == []  # Saturday, the holiday, 07:59:59 Tuesday
    assert recovery.resume_due_pauses(now=tuesday_0800) == [created.queue_id]
    plan = _run(created.queue_id, now=tuesday_0800)
    assert [(s - tuesday_0800).total_seconds() for _, s in plan.sends] == [0.0, 20.0, 40.0, 60.0]  # the 60 s horizon, from 08:00 sharp
    sent_at = sorted(c.sent_at for c in Contact.select().where(Contact.status == ContactStatus.SENT))
    assert sent_at[3] >= tuesday_0800


def test_a_manual_pause_is_not_lifted_by_the_clock(db):
    setup = make_tenant(business_hours="mon-fri 08:00-18:00")
    created = _campaign(setup, 2, now=datetime(2026, 9, 4, 21, 0))
    _run(created.queue_id, now=datetime(2026, 9, 4, 21, 0))  # closed: paused for hours
    queue = Queue.get_by_id(created.queue_id)
    queues.resume(queue)  # the caller resumes; the next dispatch finds the window closed again
    queues.pause(queue, reason="ERP pediu")
    assert recovery.resume_due_pauses(now=datetime(2026, 9, 8, 12, 0)) == []
    assert Queue.get_by_id(created.queue_id).pause_reason == "ERP pediu"


def test_hours_across_a_dst_change(db):
    # New York: EST (UTC-5) until Sunday 8 March 2026, then EDT (UTC-4).
    setup = make_tenant(timezone="America/New_York", business_hours="mon-fri 09:00-17:00", pace=EVERY_20_SECONDS)
    friday_1700_est = datetime(2026, 3, 6, 22, 0)
    created = _campaign(setup, 2, now=friday_1700_est)
    assert _run(created.queue_id, now=friday_1700_est).sends == []
    monday_0900_edt = datetime(2026, 3, 9, 13, 0)  # not 14:00: the offset changed over the weekend
    assert Queue.get_by_id(created.queue_id).resume_at == monday_0900_edt
    assert recovery.resume_due_pauses(now=monday_0900_edt - timedelta(minutes=1)) == []
    assert recovery.resume_due_pauses(now=monday_0900_edt) == [created.queue_id]


def test_notifications_ignore_business_hours(db):
    setup = make_tenant(business_hours="mon-fri 08:00-18:00", holidays="BR", pace=EVERY_20_SECONDS)
    sunday_night = datetime(2026, 9, 7, 2, 30)  # 23:30 on Sunday, before a holiday
    created = _campaign(setup, 3, template_type="notification", now=sunday_night)
    assert created.estimated_duration_minutes == 1
    plan = _run(created.queue_id, now=sunday_night)
    assert len(plan.sends) == 3
    assert SandboxMessage.select().count() == 3


def test_instance_daily_cap_pauses_until_local_midnight(db):
    setup = make_tenant(pace={"min_interval": 1, "max_interval": 1, "daily_cap": 4})
    noon = datetime(2026, 9, 9, 15, 0)
    created = _campaign(setup, 6, now=noon)
    assert len(_run(created.queue_id, now=noon).sends) == 4
    plan = _run(created.queue_id, now=noon + timedelta(seconds=10))
    assert plan.sends == []
    queue = Queue.get_by_id(created.queue_id)
    local_midnight = datetime(2026, 9, 10, 3, 0)
    assert (queue.status, queue.pause_reason, queue.resume_at) == (QueueStatus.PAUSED, dispatch.DAILY_CAP_REASON, local_midnight)
    assert recovery.resume_due_pauses(now=local_midnight) == [created.queue_id]
    assert len(_run(created.queue_id, now=local_midnight).sends) == 2


def test_tenant_daily_cap_counts_every_instance(db):
    setup = make_tenant(daily_cap=5, pace={"min_interval": 1, "max_interval": 1})
    from billing import tenants

    tenants.create_instance(setup.tenant, name="second", provider="sandbox", messages_per_minute=60, min_interval=1, max_interval=1)
    noon = datetime(2026, 9, 9, 15, 0)
    created = _campaign(setup, 9, now=noon)
    plan = _run(created.queue_id, now=noon)
    assert len(plan.sends) == 5
    used = {c.instance_id for c in Contact.select().where(Contact.status == ContactStatus.SENT)}
    assert len(used) == 2  # both instances took part


def test_warm_up_ramps_the_daily_cap():
    assert [pacing.daily_cap(cap=0, warmup_days=5, age_days=d) for d in range(7)] == [20, 40, 60, 80, 100, 0, 0]
    assert [pacing.daily_cap(cap=50, warmup_days=5, age_days=d) for d in range(7)] == [20, 40, 50, 50, 50, 50, 50]
    assert pacing.daily_cap(cap=30, warmup_days=0, age_days=0) == 30


def test_a_new_number_warms_up(db):
    setup = make_tenant(pace={"min_interval": 1, "max_interval": 1, "warmup_days": 10})
    start = datetime.utcnow()
    Instance.update(created_at=start).execute()
    created = _campaign(setup, 25, now=start)
    booked = 0
    for step in range(3):
        booked += len(_run(created.queue_id, now=start + timedelta(seconds=60 * step)).sends)
    assert booked == pacing.WARMUP_FIRST_DAY_CAP


def test_gaps_are_random_within_bounds_and_rests_come_every_n():
    instance = Instance(messages_per_minute=20, min_interval=5, max_interval=15, rest_every=3, rest_seconds=60)
    pace = pacing.Pace.of(instance)
    rng = random.Random(7)
    gaps, sends = [], 0
    for _ in range(9):
        gap, sends = pace.gap(sends_since_rest=sends, rng=rng)
        gaps.append(gap)
    rests = [g for g in gaps if g >= 60]
    assert [i for i, g in enumerate(gaps) if g >= 60] == [2, 5, 8]
    assert all(65 <= g <= 60 * pacing.REST_SPREAD + 15 for g in rests)
    assert all(5 <= g <= 15 for g in gaps if g < 60)
    assert len({round(g, 3) for g in gaps}) == 9  # not regular
    derived = pacing.Pace.of(Instance(messages_per_minute=12, min_interval=None, max_interval=None, rest_every=0, rest_seconds=0))
    assert (derived.min_interval, derived.max_interval, derived.mean_interval) == (3.75, 6.25, 5.0)


def test_the_floor_admits_one_send_per_min_interval(db):
    setup = make_tenant()
    now = datetime(2030, 5, 5, 12, 0)
    assert pacing.admit(setup.instance.id, min_interval=2, now=now) == 0
    assert pacing.admit(setup.instance.id, min_interval=2, now=now + timedelta(seconds=0.5)) == 1.5
    assert pacing.admit(setup.instance.id, min_interval=2, now=now + timedelta(seconds=2)) == 0


def test_hours_in_each_recipients_zone(db):
    setup = make_tenant(business_hours="mon-fri 08:00-18:00", recipient_timezone=True, pace=EVERY_20_SECONDS)
    sao_paulo, manaus, rio_branco = "+5511987654321", "+5592987654321", "+5568987654321"
    tuesday_1130_utc = datetime(2026, 9, 8, 11, 30)  # 08:30 São Paulo, 07:30 Manaus, 06:30 Rio Branco
    created = campaigns.create_campaign(setup.tenant, template_type="overdue", now=tuesday_1130_utc, request={
        "external_id": "tz", "contacts": [contact(sao_paulo), contact(manaus), contact(rio_branco)]})
    plan = _run(created.queue_id, now=tuesday_1130_utc)
    assert [Contact.get_by_id(c).phone for c, _ in plan.sends] == [sao_paulo]
    waiting = {c.phone: c.next_attempt_at for c in Contact.select().where(Contact.status == ContactStatus.PENDING)}
    assert waiting == {manaus: datetime(2026, 9, 8, 12, 0), rio_branco: datetime(2026, 9, 8, 13, 0)}
    # nothing open for the others yet: the queue waits for the first opening
    assert _run(created.queue_id, now=tuesday_1130_utc + timedelta(minutes=1)).sends == []
    queue = Queue.get_by_id(created.queue_id)
    assert (queue.status, queue.resume_at) == (QueueStatus.PAUSED, datetime(2026, 9, 8, 12, 0))
    assert recovery.resume_due_pauses(now=datetime(2026, 9, 8, 12, 0)) == [created.queue_id]
    assert [Contact.get_by_id(c).phone for c, _ in _run(created.queue_id, now=datetime(2026, 9, 8, 12, 0)).sends] == [manaus]
