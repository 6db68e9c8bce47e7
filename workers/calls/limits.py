"""Client-side provider limits per deployment: requests and tokens per minute, and an adaptive
concurrency limit — so a worker rides a provider's real limit instead of bouncing off it.

- ``rpm`` / ``tpm`` from the config are token buckets shared by every in-flight job of the
  process. They refill at ``LIMIT_MARGIN`` × the declared rate and hold one second's worth, so
  no 60-second window ever sees more than ~99.7 % of the declared limit (a provider counting
  in sliding windows never answers 429 for our pace). Token reservations are estimates
  (calibrated input + ``max_tokens``), settled against the reported usage after the call.
- The concurrency limit is AIMD: +1/limit per success (one more slot per limit's worth of
  successes), halved on a 429 or an overload (at most once per ``DECREASE_COOLDOWN_S``),
  between 1 and the process's concurrency.

These pace one worker's calls; across worker processes, ``rpm`` and ``tpm`` are also taken
from the deployment's shared buckets in the ledger before a call
(:mod:`workers.calls.shared_pace`), so N workers together keep to the declared rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from broker.config import DeploymentConfig

LIMIT_MARGIN = 0.98
DECREASE_COOLDOWN_S = 1.0


class TokenBucket:
    """``rate`` units a second up to ``capacity``; the level may go negative after a settle."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._level = capacity
        self._at = clock()

    def _refill(self) -> float:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._at) * self.rate)
        self._at = now
        return self._level

    def wait_s(self, amount: float) -> float:
        """Seconds until ``amount`` may be taken (0 when now). An amount above the capacity
        waits for a full bucket and then runs into debt."""
        need = min(amount, self.capacity) - self._refill()
        return 0.0 if need <= 0 else need / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self._level -= amount

    def settle(self, extra: float) -> None:
        """Charge (positive) or refund (negative) the difference to the estimate."""
        self._level = min(self.capacity, self._level - extra)


class DeploymentLimiter:
    def __init__(
        self,
        deployment: DeploymentConfig,
        max_concurrency: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.requests = _per_minute(deployment.rpm, clock)
        self.tokens = _per_minute(deployment.tpm, clock)
        self.ceiling = max(1, max_concurrency)
        self.limit = float(self.ceiling)
        self.in_flight = 0
        self._decreased_at = -math.inf

    def wait_s(self, tokens: int) -> float:
        """0 when a call reserving ``tokens`` may start now; else seconds until it may (``inf``
        when only a finished call can make room)."""
        if self.in_flight >= int(self.limit):
            return math.inf
        wait = 0.0
        if self.requests is not None:
            wait = self.requests.wait_s(1)
        if self.tokens is not None:
            wait = max(wait, self.tokens.wait_s(tokens))
        return wait

    def book(self, tokens: int) -> float:
        """Take the capacity now — running into debt — for a call that starts after the
        returned wait. Later callers see the debt and wait longer: calls are spaced at the
        deployment's pace in arrival order, with no polling."""
        wait = self.wait_s(tokens)
        self.start(tokens)
        return wait

    def cancel(self, tokens: int) -> None:
        """Give back a booking whose call did not happen."""
        self.in_flight -= 1
        if self.requests is not None:
            self.requests.settle(-1)
        if self.tokens is not None:
            self.tokens.settle(-tokens)

    def start(self, tokens: int) -> None:
        self.in_flight += 1
        if self.requests is not None:
            self.requests.take(1)
        if self.tokens is not None:
            self.tokens.take(tokens)

    def finished(self, reserved: int, used: int | None, *, pushed_back: bool) -> None:
        """A call ended: ``used`` tokens (None if unknown); ``pushed_back`` for 429/overload."""
        self.in_flight -= 1
        if self.tokens is not None and used is not None:
            self.tokens.settle(used - reserved)
        if pushed_back:
            now = self._clock()
            if now - self._decreased_at >= DECREASE_COOLDOWN_S:
                self.limit = max(1.0, self.limit / 2)
                self._decreased_at = now
        else:
            self.limit = min(float(self.ceiling), self.limit + 1 / self.limit)


def _per_minute(limit: int | None, clock: Callable[[], float]) -> TokenBucket | None:
    if limit is None:
        return None
    per_second = limit / 60
    return TokenBucket(per_second * LIMIT_MARGIN, max(1.0, per_second), clock)


class LimitBoard:
    """One limiter per deployment key, created on first use."""

    def __init__(self, max_concurrency: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_concurrency = max_concurrency
        self._clock = clock
        self._limiters: dict[str, DeploymentLimiter] = {}

    def __getitem__(self, deployment: DeploymentConfig) -> DeploymentLimiter:
        limiter = self._limiters.get(deployment.key)
        if limiter is None:
            limiter = DeploymentLimiter(deployment, self.max_concurrency, self._clock)
            self._limiters[deployment.key] = limiter
        return limiter

    def concurrency_limits(self) -> dict[str, float]:
        """The adaptive limit by deployment, for metrics."""
        return {key: limiter.limit for key, limiter in self._limiters.items()}
