"""The per-tenant bound of a worker process (billing.fairness): admission,
release, independence of tenants, thread safety, the setting's rules and the
growing delay of refused sends."""
from __future__ import annotations

import threading
import time

import pytest

from billing import fairness
from billing.config import Settings
from billing.fairness import TenantSlots, busy_delay, limit_for


def test_a_tenant_gets_at_most_its_bound_and_others_are_not_affected():
    slots = TenantSlots(limit=2)
    assert slots.try_acquire("a") and slots.try_acquire("a")
    assert not slots.try_acquire("a")
    assert slots.try_acquire("b") and slots.running("b") == 1
    assert slots.running("a") == 2
    slots.release("a")
    assert slots.running("a") == 1 and slots.try_acquire("a")


def test_held_gives_its_place_back_whatever_happens_and_a_refusal_takes_none():
    slots = TenantSlots(limit=1)
    with pytest.raises(RuntimeError), slots.held(7) as admitted:
        assert admitted and slots.running(7) == 1
        raise RuntimeError("the send broke")
    assert slots.running(7) == 0
    with slots.held(7) as first, slots.held(7) as second:
        assert first and not second
        assert slots.running(7) == 1
    assert slots.running(7) == 0


def test_no_bound_admits_everything_and_still_counts():
    slots = TenantSlots(limit=fairness.UNBOUNDED)
    assert all(slots.try_acquire("a") for _ in range(50))
    assert slots.running("a") == 50


def test_many_threads_never_run_more_than_the_bound():
    slots = TenantSlots(limit=3)
    peak, lock, start = [0], threading.Lock(), threading.Barrier(16)
    admitted = []

    def work() -> None:
        start.wait()
        for _ in range(300):
            with slots.held("a") as ok:
                if ok:
                    with lock:
                        peak[0] = max(peak[0], slots.running("a"))
                        admitted.append(1)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] <= 3 and admitted
    assert slots.running("a") == 0


@pytest.mark.parametrize(("configured", "threads", "limit"), [
    (None, 16, 8), (None, 8, 4), (None, 4, 2), (None, 3, 1), (None, 2, 1), (None, 1, 1),
    (0, 8, 0), (1, 8, 1), (7, 8, 7), (1, 1, 1), (5, 1, 5),
])
def test_the_limit_of_a_worker(configured, threads, limit):
    assert limit_for(configured=configured, threads=threads) == limit


@pytest.mark.parametrize(("configured", "threads", "message"), [
    (8, 8, "SEND_TENANT_CONCURRENCY (8) must be below the worker's threads (8)"),
    (100, 4, "SEND_TENANT_CONCURRENCY (100) must be below the worker's threads (4)"),
    (-1, 8, "SEND_TENANT_CONCURRENCY must be 0 (no bound) or more, got -1"),
])
def test_a_limit_that_lets_one_tenant_take_every_thread_is_refused(configured, threads, message):
    with pytest.raises(ValueError, match=r"^" + message.replace("(", r"\(").replace(")", r"\)")):
        limit_for(configured=configured, threads=threads)


def test_a_refused_send_comes_back_later_each_time_up_to_a_cap():
    low, high = 1 - fairness.BUSY_JITTER, 1 + fairness.BUSY_JITTER
    for refusals, base in [(0, 1.0), (1, 2.0), (2, 4.0), (4, 16.0), (5, 30.0), (60, 30.0)]:
        delays = [busy_delay(refusals) for _ in range(50)]
        assert all(base * low <= delay <= base * high for delay in delays), (refusals, delays)
        assert len(set(delays)) > 1  # spread, so refused sends do not come back together


def test_the_setting_is_read_from_the_environment():
    assert Settings.from_env({"DATABASE_URL": "sqlite:///x"}).send_tenant_concurrency is None
    assert Settings.from_env({"DATABASE_URL": "sqlite:///x", "SEND_TENANT_CONCURRENCY": "3"}).send_tenant_concurrency == 3
    assert Settings.from_env({"DATABASE_URL": "sqlite:///x", "SEND_TENANT_CONCURRENCY": " "}).send_tenant_concurrency is None
    with pytest.raises(ValueError, match="SEND_TENANT_CONCURRENCY must be a whole number"):
        Settings.from_env({"DATABASE_URL": "sqlite:///x", "SEND_TENANT_CONCURRENCY": "two"})


def test_configure_sets_both_bounds_of_the_process():
    saved = fairness.sends.limit, fairness.health_checks.limit
    try:
        fairness.configure(limit=5)
        assert fairness.sends.limit == fairness.health_checks.limit == 5
    finally:
        fairness.sends.limit, fairness.health_checks.limit = saved


def _finish_quickly(slots: TenantSlots, tenant: str, *, times: int) -> None:
    """Run ``times`` instant pieces of ``tenant``'s work, so the bound knows it is quick."""
    for _ in range(times):
        with slots.held(tenant) as admitted:
            assert admitted


def test_a_tenant_with_no_history_or_slow_work_is_refused_at_once_and_backs_off():
    slots = TenantSlots(limit=1)
    assert slots.try_acquire("a")
    started = time.monotonic()
    with slots.held("a", wait=5) as admitted:
        assert not admitted
    assert time.monotonic() - started < 1  # no history: nobody knows it will free soon, so no wait
    first, second = slots.refusal("a", refusals=0), slots.refusal("a", refusals=3)
    assert first.refusals == 1 and second.refusals == 4
    assert second.delay > first.delay


def test_a_quick_tenant_at_its_bound_waits_briefly_for_a_place_instead_of_being_refused():
    slots = TenantSlots(limit=1)
    _finish_quickly(slots, "a", times=5)
    token = slots.acquire("a")
    assert token is not None
    threading.Timer(0.05, slots.release, args=("a", token)).start()
    with slots.held("a", wait=2) as admitted:
        assert admitted  # the place freed while it waited
    refusal = slots.refusal("a", refusals=7)
    assert refusal.refusals == 0 and refusal.delay <= fairness.QUICK_RETRY_DELAY_SECONDS * (1 + fairness.BUSY_JITTER)


def test_a_quick_tenant_whose_running_work_hangs_stops_waiting():
    slots = TenantSlots(limit=1)
    _finish_quickly(slots, "a", times=5)
    assert slots.try_acquire("a")
    time.sleep(fairness.QUICK_HOLD_SECONDS * fairness.HUNG_FACTOR + 0.05)  # the running piece now hangs
    started = time.monotonic()
    with slots.held("a", wait=5) as admitted:
        assert not admitted
    assert time.monotonic() - started < 1
    assert slots.refusal("a", refusals=2).refusals == 3


def test_slow_work_makes_a_tenant_slow_again(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(fairness.time, "monotonic", lambda: clock[0])
    slots = TenantSlots(limit=2)
    _finish_quickly(slots, "a", times=3)
    assert slots.refusal("a", refusals=0).refusals == 0
    token = slots.acquire("a")
    clock[0] += fairness.QUICK_HOLD_SECONDS / fairness.HOLD_AVERAGE_WEIGHT * 1.5
    slots.release("a", token)  # one slow piece pulls the average over the line
    assert slots.refusal("a", refusals=0).refusals == 1
