"""Choosing which variation of a template each contact receives.

Sending thousands of identical messages is what gets a WhatsApp number banned,
so a template has several wordings (variations) and each contact gets one of
them by a strategy:

* ``random``: uniform choice;
* ``sequential``: the least used so far, counting the stored ``times_used``
  plus this picker's picks, ties broken by the given order, so the spread is
  even and deterministic;
* ``weighted``: random, in proportion to each variation's ``weight``.

A picker counts its picks in :attr:`VariationPicker.usage` so the caller can
persist them afterwards with one UPDATE per variation instead of one per
contact.
"""
from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Sequence
from typing import Protocol

STRATEGY_RANDOM = "random"
STRATEGY_SEQUENTIAL = "sequential"
STRATEGY_WEIGHTED = "weighted"
#: Every strategy a :class:`VariationPicker` knows.
STRATEGIES = (STRATEGY_RANDOM, STRATEGY_SEQUENTIAL, STRATEGY_WEIGHTED)


class Variation(Protocol):
    """What a picker needs of a variation (a model row fits)."""

    id: object
    times_used: int
    weight: int | float


class VariationPicker:
    """Picks variations for one batch of contacts.

    Parameters:
      variations: the candidates; each has ``id``, ``times_used`` (an int
        >= 0, read by ``sequential``) and ``weight`` (a number > 0, read by
        ``weighted``).
      strategy: one of :data:`STRATEGIES`.
      rng: the random source; defaults to a new :class:`random.Random`. Tests
        pass ``random.Random(seed)``.

    Raises:
      ValueError: if there are no variations, the strategy is unknown, two
        variations share an id, or a count or weight the strategy reads is
        invalid.

    Attributes:
      usage: variation id -> how many times this picker picked it; only
        variations picked at least once appear.
    """

    def __init__(
        self,
        variations: Sequence[Variation],
        *,
        strategy: str,
        rng: random.Random | None = None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}, expected one of {', '.join(STRATEGIES)}")
        self._variations = tuple(variations)
        if not self._variations:
            raise ValueError("no variations to pick from")
        ids = [variation.id for variation in self._variations]
        if len(set(ids)) != len(ids):
            raise ValueError("variation ids must be unique")

        self.strategy = strategy
        self.usage: dict[object, int] = {}
        self._rng = rng if rng is not None else random.Random()
        self._pick = {
            STRATEGY_RANDOM: self._pick_random,
            STRATEGY_SEQUENTIAL: self._pick_sequential,
            STRATEGY_WEIGHTED: self._pick_weighted,
        }[strategy]

        if strategy == STRATEGY_SEQUENTIAL:
            # (uses so far, position): the heap's smallest entry is the least
            # used variation, the earliest given among equals.
            self._heap = [(_times_used(v), index) for index, v in enumerate(self._variations)]
            heapq.heapify(self._heap)
        elif strategy == STRATEGY_WEIGHTED:
            # Cumulative weights once, instead of random.choices summing the
            # weights again on every pick.
            self._cum_weights = list(itertools.accumulate(_weight(v) for v in self._variations))

    def pick(self) -> Variation:
        """Return the next variation and count it in :attr:`usage`."""
        variation = self._pick()
        self.usage[variation.id] = self.usage.get(variation.id, 0) + 1
        return variation

    def _pick_random(self) -> Variation:
        return self._rng.choice(self._variations)

    def _pick_sequential(self) -> Variation:
        used, index = self._heap[0]
        heapq.heapreplace(self._heap, (used + 1, index))
        return self._variations[index]

    def _pick_weighted(self) -> Variation:
        return self._rng.choices(self._variations, cum_weights=self._cum_weights)[0]


def _times_used(variation: Variation) -> int:
    times_used = variation.times_used
    # bool is an int subclass but never a count.
    if isinstance(times_used, bool) or not isinstance(times_used, int) or times_used < 0:
        raise ValueError(f"variation {variation.id!r} has invalid times_used {times_used!r}")
    return times_used


def _weight(variation: Variation) -> int | float:
    weight = variation.weight
    valid = isinstance(weight, (int, float)) and not isinstance(weight, bool)
    # NaN and infinity would silently skew or break random.choices.
    if not valid or not math.isfinite(weight) or weight <= 0:
        raise ValueError(f"variation {variation.id!r} has invalid weight {weight!r}")
    return weight
