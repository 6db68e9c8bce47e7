"""What a worker knows about each deployment's health: circuit breaker, latency, pauses.

One :class:`DeploymentHealth` per (provider, model), shared by every route that names it.

Circuit breaker::

    closed ──(N consecutive failures, or error rate ≥ R over the last W calls)──▶ open
    open ──(open_s elapsed)──▶ half-open: one probe call at a time
    half-open ──probe succeeds──▶ closed        half-open ──probe fails──▶ open

Failures are what says the deployment is unwell: timeouts, refused connections, 5xx,
overload. A 429 is not a failure but a *pause*: the deployment is skipped until its
Retry-After has passed. A 4xx is the request's fault and counts for nothing.

Once a call has failed, and until one succeeds, the deployment admits only as many calls at
once as the breaker may still lose: ``in_flight + consecutive_failures < N``. So a failing
deployment is not sent a burst of every job in flight while its circuit is about to open, and
once open it receives one probe per open interval. Before its first outcome a deployment ramps
up: N calls, doubling every ``RAMP_STEP_S`` (20 ms) — a deployment that is down and fails fast
(refused, an instant 5xx) gets about N calls, not the whole first wave; a healthy one is held
back by tens of milliseconds, not by one call's latency (LLM calls take seconds).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable
from enum import StrEnum

from broker.settings import CircuitSettings

log = logging.getLogger(__name__)

LATENCY_WEIGHT = 0.2  # weight of the newest call in the latency EWMA
RAMP_STEP_S = 0.02  # before its first outcome, a deployment's cap on calls doubles this often


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class DeploymentHealth:
    """Circuit breaker, in-flight count, latency EWMA and Retry-After pause of one deployment."""

    def __init__(
        self,
        key: str,
        settings: CircuitSettings,
        clock: Callable[[], float] = time.monotonic,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self.key = key
        self.settings = settings
        self._clock = clock
        self._on_release = on_release
        self.state = CircuitState.CLOSED
        self.in_flight = 0
        self.consecutive_failures = 0
        self.proven = False  # a call has succeeded (since the circuit last opened)
        self.first_call_at: float | None = None
        self.first_outcome_at: float | None = None  # when the ramp ended (clock time)
        self.opened_at = 0.0
        self.paused_until = 0.0
        self.latency_s: float | None = None
        self._outcomes: collections.deque[bool] = collections.deque(maxlen=settings.window)

    # -- admission ----------------------------------------------------------------------------

    def _released(self) -> None:
        self.in_flight -= 1
        if self._on_release is not None:
            self._on_release()

    def available_at(self) -> float:
        """The clock time from which a call may be admitted (now or later)."""
        if self.state is CircuitState.OPEN:
            return max(self.opened_at + self.settings.open_s, self.paused_until)
        return self.paused_until

    def try_acquire(self) -> bool:
        """Admit one call now (the caller must ``release`` it) or refuse."""
        now = self._clock()
        if now < self.paused_until:
            return False
        if self.state is CircuitState.OPEN:
            if now < self.opened_at + self.settings.open_s:
                return False
            self._change(CircuitState.HALF_OPEN)
        if self.state is CircuitState.HALF_OPEN:
            if self.in_flight:
                return False  # one probe at a time
        elif self.in_flight + self.consecutive_failures >= self._doubt_cap(now):
            return False
        if self.first_call_at is None:
            self.first_call_at = now
        self.in_flight += 1
        return True

    def _doubt_cap(self, now: float) -> float:
        """How many calls may be out while their outcome is in doubt: N after a failure; before
        the first outcome, N doubling every RAMP_STEP_S from the first call (a provider that
        is down and fails fast is caught at N calls, a healthy one is held back by
        milliseconds); once a call has succeeded and none has failed since, no limit."""
        if self.consecutive_failures:
            return self.settings.failures
        if self.proven or self.first_call_at is None:
            return math.inf
        steps = (now - self.first_call_at) / RAMP_STEP_S
        return self.settings.failures * 2 ** min(steps, 30)

    def ramp_grows_at(self) -> float:
        """The clock time at which the cap on calls in doubt next doubles (``inf``: it will not
        grow by waiting — no ramp, or only an outcome changes it). Calls refused by the ramp
        wait until then rather than for an outcome, which may be a whole provider latency away."""
        if (
            self.state is not CircuitState.CLOSED
            or self.consecutive_failures
            or self.proven
            or self.first_call_at is None
        ):
            return math.inf
        steps = math.floor((self._clock() - self.first_call_at) / RAMP_STEP_S) + 1
        return self.first_call_at + steps * RAMP_STEP_S

    # -- outcomes -----------------------------------------------------------------------------

    def _outcome(self) -> None:
        if self.first_outcome_at is None:
            self.first_outcome_at = self._clock()

    def succeeded(self, latency_s: float) -> None:
        self._released()
        self._outcome()
        self.consecutive_failures = 0
        self.proven = True
        self._outcomes.append(True)
        self.latency_s = (
            latency_s
            if self.latency_s is None
            else self.latency_s + LATENCY_WEIGHT * (latency_s - self.latency_s)
        )
        if self.state is not CircuitState.CLOSED:
            self._change(CircuitState.CLOSED)

    def failed(self) -> None:
        self._released()
        self._outcome()
        self.consecutive_failures += 1
        self._outcomes.append(False)
        if self.state is CircuitState.HALF_OPEN or self._should_open():
            self._open()

    def rate_limited(self, retry_after: float | None) -> None:
        """A 429: not unhealthy, but pause until the provider's Retry-After has passed."""
        self._released()
        if retry_after:
            self.paused_until = max(self.paused_until, self._clock() + retry_after)

    def neutral(self) -> None:
        """A call that says nothing about health (a bad request, a cancelled call)."""
        self._released()

    def _should_open(self) -> bool:
        if self.state is not CircuitState.CLOSED:
            return False
        if self.consecutive_failures >= self.settings.failures:
            return True
        known = len(self._outcomes)
        if known < self.settings.min_calls:
            return False
        failures = known - sum(self._outcomes)
        return failures / known >= self.settings.error_rate

    def _open(self) -> None:
        self.opened_at = self._clock()
        self._outcomes.clear()
        self._change(CircuitState.OPEN)

    def _change(self, state: CircuitState) -> None:
        log.warning(
            "circuit %s: %s -> %s (consecutive failures %d)",
            self.key,
            self.state.value,
            state.value,
            self.consecutive_failures,
        )
        self.state = state


class HealthBoard:
    """Every deployment's health in this worker process, created on first use."""

    def __init__(
        self,
        settings: CircuitSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._deployments: dict[str, DeploymentHealth] = {}
        self._released: asyncio.Event | None = None

    def __getitem__(self, key: str) -> DeploymentHealth:
        health = self._deployments.get(key)
        if health is None:
            health = DeploymentHealth(key, self.settings, self._clock, self._notify)
            self._deployments[key] = health
        return health

    def _notify(self) -> None:
        if self._released is not None:
            self._released.set()
            self._released = None

    async def wait_for_release(self, timeout_s: float) -> None:
        """Until any deployment's call ends (room may have opened up), or ``timeout_s``."""
        if self._released is None:
            self._released = asyncio.Event()
        with contextlib.suppress(TimeoutError):  # asyncio.timeout keeps a cancel (wait_for may not)
            async with asyncio.timeout(timeout_s):
                await self._released.wait()

    def snapshot(self) -> dict[str, CircuitState]:
        """Circuit state by deployment, for metrics and ``headway top``."""
        return {key: health.state for key, health in self._deployments.items()}
