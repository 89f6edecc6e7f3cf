"""One tenant cannot hold every worker thread: a bound, per worker process,
on the work that talks to one tenant's gateway at the same time.

A tenant's gateway may hang, be slow, or hold each send for a long "typing"
delay. Worker threads are shared by every tenant, so without a bound one such
tenant fills them all and every other tenant's sends wait behind it. Each
worker process lets at most ``limit`` sends (and, separately, ``limit``
health checks and ``limit`` callback deliveries) of one tenant run at once.

What happens to the work over the bound depends on how the tenant's work has
been going, so that a bound meant for a hung gateway does not throttle a fast
one:

- **quick** (its recent work took under QUICK_HOLD_SECONDS, none of it hangs
  now): a place frees within moments, so the thread waits for one, up to
  ADMISSION_WAIT_SECONDS; if none frees, the message comes back after
  QUICK_RETRY_DELAY_SECONDS, with no growing delay;
- **slow or hung**: the thread does not wait at all (another tenant's message
  may be next); the message comes back after a delay that doubles at each
  refusal, from BUSY_FIRST_DELAY_SECONDS up to BUSY_MAX_DELAY_SECONDS.

With T threads and a bound of k, up to ``(T - 1) // k`` tenants may hang at
once before another tenant's send waits for a thread.

The bound is in memory and per process: nothing is written for it, and a
process that dies takes its counts with it.
"""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

#: Sends of one tenant a worker process runs at once when
#: SEND_TENANT_CONCURRENCY is unset: half the worker's threads (at least one,
#: at most threads - 1), so a hung tenant leaves the other half to the rest.
DEFAULT_SHARE_OF_THREADS = 0.5

#: The bound of a process no worker has configured (code calling
#: billing.sending directly, tests); a worker sets its own at boot.
DEFAULT_TENANT_CONCURRENCY = 2

#: SEND_TENANT_CONCURRENCY's value that turns the bound off (a deployment
#: with one tenant).
UNBOUNDED = 0

#: A tenant's work is quick while its recent pieces (an average that weighs
#: the newest by HOLD_AVERAGE_WEIGHT) took under this long, and none of the
#: running ones has run QUICK_HOLD_SECONDS * HUNG_FACTOR yet.
QUICK_HOLD_SECONDS = 0.5
HOLD_AVERAGE_WEIGHT = 0.2
HUNG_FACTOR = 4

#: How long a thread waits for a quick tenant's place before giving the
#: message back (short: another tenant's message may wait for the thread).
ADMISSION_WAIT_SECONDS = 0.5

#: A quick tenant's refused message comes back after this long (seconds).
QUICK_RETRY_DELAY_SECONDS = 0.5

#: A slow or hung tenant's refused message comes back after this long
#: (seconds), doubled at each refusal of the same message up to
#: BUSY_MAX_DELAY_SECONDS: a tenant whose gateway hangs for minutes
#: re-publishes its backlog ever more rarely instead of every second.
BUSY_FIRST_DELAY_SECONDS = 1.0
BUSY_MAX_DELAY_SECONDS = 30.0
#: Each delay is spread this much either way, so refused sends do not come
#: back all at once.
BUSY_JITTER = 0.25

_rng = random.SystemRandom()


def limit_for(*, configured: int | None, threads: int) -> int:
    """The bound a worker of ``threads`` threads applies.

    Parameters:
      configured: SEND_TENANT_CONCURRENCY (None: unset, the default; 0: no bound).
      threads: the worker's threads.

    Raises:
      ValueError: the setting would let one tenant take every thread.
    """
    if configured is None:
        return max(1, min(int(threads * DEFAULT_SHARE_OF_THREADS), threads - 1))
    if configured < 0:
        raise ValueError(f"SEND_TENANT_CONCURRENCY must be {UNBOUNDED} (no bound) or more, got {configured}")
    if configured != UNBOUNDED and threads > 1 and configured >= threads:
        raise ValueError(
            f"SEND_TENANT_CONCURRENCY ({configured}) must be below the worker's threads ({threads}), so that one "
            f"tenant's gateway cannot hold them all; {UNBOUNDED} turns the bound off")
    return configured


def _spread(seconds: float) -> float:
    return seconds * _rng.uniform(1 - BUSY_JITTER, 1 + BUSY_JITTER)


def busy_delay(refusals: int) -> float:
    """Seconds until a slow or hung tenant's message refused ``refusals``
    times before comes back.

    Parameters:
      refusals: how often this message was refused before (0: the first time).
    """
    return _spread(min(BUSY_MAX_DELAY_SECONDS, BUSY_FIRST_DELAY_SECONDS * 2 ** min(refusals, 16)))


@dataclass(frozen=True)
class Refusal:
    """When a refused message comes back.

    Parameters:
      delay: seconds until it is published again.
      refusals: the count it carries (its next refusal's delay grows from it;
        0 again when the tenant's work is quick).
    """

    delay: float
    refusals: int


@dataclass
class _Tenant:
    """One tenant's work in this process."""

    #: Monotonic start of each running piece, by its token.
    started: dict[int, float] = field(default_factory=dict)
    #: Average seconds a piece held its place (None: none finished yet).
    average_hold: float | None = None


class TenantSlots:
    """How many pieces of work each tenant has running in this process, and
    an admission under a bound that waits only for quick tenants. Thread-safe.

    Parameters:
      limit: the most a tenant may run at once (0: no bound, only counted).
    """

    def __init__(self, *, limit: int) -> None:
        self._changed = threading.Condition()
        self._tenants: dict[Hashable, _Tenant] = {}
        self._tokens = iter(range(1, 1 << 62))
        self.limit = limit

    def _state(self, tenant: Hashable) -> _Tenant:
        return self._tenants.setdefault(tenant, _Tenant())

    def _full(self, state: _Tenant) -> bool:
        return self.limit != UNBOUNDED and len(state.started) >= self.limit

    def _quick(self, state: _Tenant, now: float) -> bool:
        if state.average_hold is None or state.average_hold >= QUICK_HOLD_SECONDS:
            return False
        return all(now - began < QUICK_HOLD_SECONDS * HUNG_FACTOR for began in state.started.values())

    def acquire(self, tenant: Hashable, *, wait: float = 0.0) -> int | None:
        """Take one of ``tenant``'s places: at once if one is free; else,
        when the tenant's work is quick, waiting up to ``wait`` seconds for one.

        Parameters:
          tenant: whose work it is.
          wait: the longest wait for a quick tenant's place (0: never waits).

        Returns:
          A token for :meth:`release`, or None when refused.
        """
        with self._changed:
            state = self._state(tenant)
            deadline = time.monotonic() + wait
            while self._full(state):
                now = time.monotonic()
                if now >= deadline or not self._quick(state, now):
                    return None
                self._changed.wait(deadline - now)
            token = next(self._tokens)
            state.started[token] = time.monotonic()
            return token

    def try_acquire(self, tenant: Hashable) -> bool:
        """Take one of ``tenant``'s places if one is free now; never waits
        (released with :meth:`release`)."""
        return self.acquire(tenant) is not None

    def release(self, tenant: Hashable, token: int | None = None) -> None:
        """Give back a place (the one of ``token``; None: the oldest)."""
        with self._changed:
            state = self._tenants.get(tenant)
            if state is None or not state.started:
                return
            if token is None:
                token = min(state.started, key=state.started.get)
            began = state.started.pop(token, None)
            if began is not None:
                held = time.monotonic() - began
                state.average_hold = held if state.average_hold is None else (
                    HOLD_AVERAGE_WEIGHT * held + (1 - HOLD_AVERAGE_WEIGHT) * state.average_hold)
            self._changed.notify_all()

    def refusal(self, tenant: Hashable, *, refusals: int) -> Refusal:
        """When a message this bound refused comes back.

        Parameters:
          tenant: whose message it is.
          refusals: how often it was refused before this time.
        """
        with self._changed:
            quick = self._quick(self._state(tenant), time.monotonic())
        if quick:
            return Refusal(delay=_spread(QUICK_RETRY_DELAY_SECONDS), refusals=0)
        return Refusal(delay=busy_delay(refusals), refusals=refusals + 1)

    @contextmanager
    def held(self, tenant: Hashable, *, wait: float = ADMISSION_WAIT_SECONDS) -> Iterator[bool]:
        """``with slots.held(tenant) as admitted:`` a place for the block when
        ``admitted`` (given back when it ends, whatever happens), else none.

        Parameters:
          tenant: whose work it is.
          wait: see :meth:`acquire`.
        """
        token = self.acquire(tenant, wait=wait)
        try:
            yield token is not None
        finally:
            if token is not None:
                self.release(tenant, token)

    def running(self, tenant: Hashable) -> int:
        """How many of ``tenant``'s pieces of work run now."""
        with self._changed:
            state = self._tenants.get(tenant)
            return len(state.started) if state else 0


#: This process's bounds: sends (number check, typing, send, auto-replies),
#: health checks, and deliveries to the tenant's callback endpoints, counted
#: apart so a tenant's busy sends never stop its instances' health checks.
sends = TenantSlots(limit=DEFAULT_TENANT_CONCURRENCY)
health_checks = TenantSlots(limit=DEFAULT_TENANT_CONCURRENCY)
callbacks = TenantSlots(limit=DEFAULT_TENANT_CONCURRENCY)


def configure(*, limit: int) -> None:
    """Apply ``limit`` (see :func:`limit_for`) to this process's bounds.

    Parameters:
      limit: the most sends, health checks and callback deliveries of one
        tenant at once, each (0: no bound).
    """
    for bound in (sends, health_checks, callbacks):
        bound.limit = limit
