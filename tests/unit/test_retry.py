"""Retries: exponential backoff with jitter, Retry-After honoured, bounded attempts and time."""

from __future__ import annotations

import time

import pytest

from broker.errors import ProviderBadRequest, ProviderRateLimited, ProviderServerError
from broker.settings import RetrySettings
from workers.calls.retry import RetryPolicy


class Recorder:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def failing(errors: list[Exception], result: str = "ok"):  # type: ignore[no-untyped-def]
    calls = {"n": 0}

    async def attempt() -> str:
        calls["n"] += 1
        if errors:
            raise errors.pop(0)
        return result

    return attempt, calls


async def test_retryable_errors_are_retried_until_success() -> None:
    attempt, calls = failing([ProviderServerError("x"), ProviderServerError("y")])
    assert await RetryPolicy.testing().call(attempt) == "ok"
    assert calls["n"] == 3


async def test_permanent_errors_are_not_retried() -> None:
    attempt, calls = failing([ProviderBadRequest("no")])
    with pytest.raises(ProviderBadRequest):
        await RetryPolicy.testing().call(attempt)
    assert calls["n"] == 1


async def test_attempts_are_bounded_and_the_last_error_is_raised() -> None:
    attempt, calls = failing([ProviderServerError(str(i)) for i in range(10)])
    with pytest.raises(ProviderServerError, match="2"):
        await RetryPolicy.testing(max_attempts=3).call(attempt)
    assert calls["n"] == 3


async def test_retry_after_is_never_undercut() -> None:
    sleeps = Recorder()
    policy = RetryPolicy(RetrySettings(initial_s=0.01, max_wait_s=0.05), sleep=sleeps)
    attempt, _ = failing([ProviderRateLimited("429", retry_after=4.0)])
    await policy.call(attempt)
    assert sleeps.waits == [4.0]


async def test_backoff_grows_with_jitter_and_is_capped() -> None:
    sleeps = Recorder()
    policy = RetryPolicy(RetrySettings(max_attempts=6, initial_s=1.0, max_wait_s=8.0), sleep=sleeps)
    attempt, _ = failing([ProviderServerError("x") for _ in range(5)])
    await policy.call(attempt)
    assert len(sleeps.waits) == 5
    assert all(0 <= w <= 8.0 for w in sleeps.waits)


async def test_no_wait_crosses_the_deadline() -> None:
    sleeps = Recorder()
    policy = RetryPolicy(RetrySettings(max_attempts=10), sleep=sleeps)
    attempt, calls = failing([ProviderRateLimited("429", retry_after=30.0) for _ in range(10)])
    with pytest.raises(ProviderRateLimited):
        await policy.call(attempt, deadline=time.monotonic() + 5)
    assert calls["n"] == 1 and sleeps.waits == []


async def test_on_attempt_counts_every_call() -> None:
    count = {"n": 0}
    attempt, _ = failing([ProviderServerError("x")])
    await RetryPolicy.testing().call(
        attempt, on_attempt=lambda: count.__setitem__("n", count["n"] + 1)
    )
    assert count["n"] == 2
