"""A small typed retry API over tenacity for provider calls.

Exponential backoff with full jitter, ``Retry-After`` honoured (never wait less than the provider
asked), bounded attempts and bounded total time, and an optional hard deadline (a job's own).
``RetryPolicy.testing()`` keeps the logic but never sleeps.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from broker.errors import ProviderError
from broker.settings import RetrySettings

T = TypeVar("T")


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, ProviderError) and error.retryable


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``settings`` (HEADWAY_RETRY_*) bound the retries; ``sleep`` replaces asyncio's."""

    settings: RetrySettings
    sleep: Callable[[float], Awaitable[None]] | None = field(default=None, compare=False)

    @classmethod
    def testing(cls, max_attempts: int = 5) -> RetryPolicy:
        async def no_sleep(_: float) -> None:
            return None

        settings = RetrySettings(max_attempts=max_attempts, initial_s=0, max_wait_s=0)
        return cls(settings, sleep=no_sleep)

    def wait_for_error(self, error: BaseException | None, failed_attempts: int) -> float:
        """Full-jitter exponential backoff, never less than the provider's Retry-After."""
        settings = self.settings
        ceiling = min(settings.max_wait_s, settings.initial_s * 2 ** (failed_attempts - 1))
        backoff = random.uniform(0, ceiling)
        retry_after = error.retry_after if isinstance(error, ProviderError) else None
        return max(backoff, retry_after or 0.0)

    def wait_for(self, state: RetryCallState) -> float:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        return self.wait_for_error(error, state.attempt_number + 1)

    async def call(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        deadline: float | None = None,
        on_attempt: Callable[[], None] | None = None,
        longest_wait_s: float | None = None,
    ) -> T:
        """Run ``attempt`` until it succeeds, fails permanently, or the budget is spent.

        ``deadline`` is a ``time.monotonic()`` instant no wait may cross; a wait longer than
        ``longest_wait_s`` is not slept either (the caller parks the work instead). The last
        error is re-raised unchanged."""
        # fast path: most calls succeed at once, and need no retry machinery at all
        if on_attempt is not None:
            on_attempt()
        try:
            return await attempt()
        except ProviderError as error:
            if not error.retryable or self.settings.max_attempts <= 1:
                raise
            first_error = error
        return await self._retry(attempt, first_error, deadline, on_attempt, longest_wait_s)

    async def _retry(
        self,
        attempt: Callable[[], Awaitable[T]],
        first_error: ProviderError,
        deadline: float | None,
        on_attempt: Callable[[], None] | None,
        longest_wait_s: float | None = None,
    ) -> T:
        """Attempts 2…n, under tenacity, after ``first_error``."""
        started = time.monotonic()
        limit = started + self.settings.max_total_s
        if deadline is not None:
            limit = min(limit, deadline)

        def stop(state: RetryCallState) -> bool:
            if stop_after_attempt(self.settings.max_attempts - 1)(state):
                return True
            if longest_wait_s is not None and state.upcoming_sleep > longest_wait_s:
                return True
            return time.monotonic() + state.upcoming_sleep >= limit  # wait runs before stop

        first_wait = self.wait_for_error(first_error, 1)
        too_long = longest_wait_s is not None and first_wait > longest_wait_s
        if too_long or time.monotonic() + first_wait >= limit:
            raise first_error
        await (self.sleep or asyncio.sleep)(first_wait)

        kwargs = {"sleep": self.sleep} if self.sleep is not None else {}
        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_retryable),
            stop=stop,
            wait=self.wait_for,
            reraise=True,
            **kwargs,  # type: ignore[arg-type]
        )
        async for try_ in retrying:
            with try_:
                if on_attempt is not None:
                    on_attempt()
                return await attempt()
        raise AssertionError("unreachable: tenacity either returns or re-raises")
