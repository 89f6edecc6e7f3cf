"""Tests for billing.domain.rotation."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from billing.domain.rotation import STRATEGIES, VariationPicker


@dataclass
class Variation:
    id: int
    times_used: int = 0
    weight: float = 1


def make(count, *, times_used=None, weights=None):
    times_used = times_used or [0] * count
    weights = weights or [1] * count
    return [Variation(id=i + 1, times_used=t, weight=w) for i, (t, w) in enumerate(zip(times_used, weights))]


def picks(picker, count):
    return [picker.pick().id for _ in range(count)]


def test_strategies():
    assert STRATEGIES == ("random", "sequential", "weighted")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_empty_variations_raise(strategy):
    with pytest.raises(ValueError, match="^no variations to pick from$"):
        VariationPicker([], strategy=strategy)


def test_unknown_strategy_raises():
    with pytest.raises(ValueError, match="^unknown strategy 'round_robin', expected one of random, sequential, weighted$"):
        VariationPicker(make(2), strategy="round_robin")


def test_strategy_is_keyword_only():
    with pytest.raises(TypeError):
        VariationPicker(make(2), "random")  # type: ignore[misc]


def test_duplicate_ids_raise():
    with pytest.raises(ValueError, match="^variation ids must be unique$"):
        VariationPicker([Variation(id=1), Variation(id=1)], strategy="random")


def test_sequential_spreads_ten_picks_over_five_variations_evenly():
    picker = VariationPicker(make(5), strategy="sequential")
    assert picks(picker, 10) == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    assert picker.usage == {1: 2, 2: 2, 3: 2, 4: 2, 5: 2}


def test_sequential_fills_up_the_least_used_first():
    picker = VariationPicker(make(3, times_used=[5, 2, 3]), strategy="sequential")
    # 2 catches up with 3 (ties go to 2, given first), both catch up with 1,
    # then all three rotate in the given order.
    assert picks(picker, 9) == [2, 2, 3, 2, 3, 1, 2, 3, 1]
    assert picker.usage == {1: 2, 2: 4, 3: 3}


def test_sequential_ties_follow_the_given_order():
    variations = [Variation(id="c"), Variation(id="a"), Variation(id="b")]
    picker = VariationPicker(variations, strategy="sequential")
    assert picks(picker, 4) == ["c", "a", "b", "c"]


def test_sequential_is_deterministic_and_ignores_rng():
    first = picks(VariationPicker(make(4, times_used=[1, 0, 7, 0]), strategy="sequential", rng=random.Random(1)), 20)
    second = picks(VariationPicker(make(4, times_used=[1, 0, 7, 0]), strategy="sequential", rng=random.Random(2)), 20)
    assert first == second
    assert first[:2] == [2, 4]
    assert Counter(first) == {1: 6, 2: 7, 4: 7}


def test_sequential_does_not_change_stored_times_used():
    variations = make(2, times_used=[3, 1])
    picker = VariationPicker(variations, strategy="sequential")
    picks(picker, 5)
    assert [v.times_used for v in variations] == [3, 1]


@pytest.mark.parametrize("bad", [-1, None, 1.5, True])
def test_sequential_rejects_invalid_times_used(bad):
    with pytest.raises(ValueError, match=r"^variation 2 has invalid times_used "):
        VariationPicker([Variation(id=1), Variation(id=2, times_used=bad)], strategy="sequential")


def test_random_is_uniform_and_reproducible_with_a_seed():
    picker = VariationPicker(make(4), strategy="random", rng=random.Random(42))
    chosen = picks(picker, 10_000)
    again = picks(VariationPicker(make(4), strategy="random", rng=random.Random(42)), 10_000)
    assert chosen == again
    counts = Counter(chosen)
    assert set(counts) == {1, 2, 3, 4}
    for count in counts.values():
        assert abs(count - 2_500) < 200
    assert picker.usage == dict(counts)


def test_random_default_rng_picks_from_the_list():
    variations = make(3)
    picker = VariationPicker(variations, strategy="random")
    assert all(picker.pick() in variations for _ in range(50))
    assert sum(picker.usage.values()) == 50


def test_weighted_follows_weights():
    picker = VariationPicker(make(3, weights=[1, 3, 6]), strategy="weighted", rng=random.Random(7))
    counts = Counter(picks(picker, 10_000))
    assert abs(counts[1] - 1_000) < 150
    assert abs(counts[2] - 3_000) < 250
    assert abs(counts[3] - 6_000) < 250
    assert picker.usage == dict(counts)


def test_weighted_accepts_float_weights():
    picker = VariationPicker(make(2, weights=[0.25, 0.75]), strategy="weighted", rng=random.Random(3))
    counts = Counter(picks(picker, 10_000))
    assert abs(counts[2] - 7_500) < 250


def test_weighted_is_reproducible_with_a_seed():
    def run():
        return picks(VariationPicker(make(3, weights=[2, 1, 1]), strategy="weighted", rng=random.Random(99)), 100)

    assert run() == run()


@pytest.mark.parametrize("bad", [0, -1, 0.0, float("nan"), float("inf"), None, "2", True])
def test_weighted_rejects_invalid_weights(bad):
    with pytest.raises(ValueError, match=r"^variation 2 has invalid weight "):
        VariationPicker([Variation(id=1), Variation(id=2, weight=bad)], strategy="weighted")


def test_single_variation_is_always_picked():
    for strategy in STRATEGIES:
        picker = VariationPicker(make(1), strategy=strategy, rng=random.Random(0))
        assert picks(picker, 3) == [1, 1, 1]
        assert picker.usage == {1: 3}


def test_usage_starts_empty_and_only_lists_picked_variations():
    picker = VariationPicker(make(5), strategy="sequential")
    assert picker.usage == {}
    picks(picker, 2)
    assert picker.usage == {1: 1, 2: 1}


def test_accepts_any_sequence():
    picker = VariationPicker(tuple(make(2)), strategy="sequential")
    assert picks(picker, 2) == [1, 2]
