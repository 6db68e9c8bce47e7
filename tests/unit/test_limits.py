"""Deployment limits: rpm/tpm buckets pace calls under the declared rate; AIMD concurrency."""

from __future__ import annotations

import math

from broker.config import DeploymentConfig
from workers.calls.limits import LIMIT_MARGIN, DeploymentLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def deployment(**limits: int) -> DeploymentConfig:
    return DeploymentConfig(provider="p", model="m", **limits)


def test_a_bucket_paces_at_its_rate_after_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, capacity=10, clock=clock)
    for _ in range(10):
        assert bucket.wait_s(1) == 0
        bucket.take(1)
    assert math.isclose(bucket.wait_s(1), 0.1)
    clock.now += 0.1
    assert bucket.wait_s(1) == 0


def test_an_amount_above_capacity_waits_for_a_full_bucket_then_runs_into_debt() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=100, capacity=100, clock=clock)
    assert bucket.wait_s(500) == 0  # full: may go
    bucket.take(500)
    assert math.isclose(bucket.wait_s(1), 4.01)  # 400 of debt, then one more


def test_rpm_never_lets_a_sixty_second_window_exceed_the_declared_limit() -> None:
    clock = Clock()
    limiter = DeploymentLimiter(deployment(rpm=600), max_concurrency=1000, clock=clock)
    starts: list[float] = []
    while clock.now < 180:
        if limiter.wait_s(0) == 0:
            limiter.start(0)
            limiter.finished(0, 0, pushed_back=False)
            starts.append(clock.now)
        else:
            clock.now += 0.001
    busiest = max(sum(1 for t in starts if s <= t < s + 60) for s in starts)
    assert busiest <= 600
    assert len(starts) / 180 * 60 >= 0.97 * 600  # and it uses what it may
    assert LIMIT_MARGIN < 1


def test_tpm_reservations_are_settled_against_reported_usage() -> None:
    clock = Clock()
    limiter = DeploymentLimiter(deployment(tpm=6000), max_concurrency=10, clock=clock)
    limiter.start(100)  # the whole second's worth
    assert limiter.wait_s(50) > 0
    limiter.finished(reserved=100, used=40, pushed_back=False)  # 60 refunded
    assert limiter.wait_s(50) == 0


def test_concurrency_halves_on_push_back_and_grows_back_additively() -> None:
    clock = Clock()
    limiter = DeploymentLimiter(deployment(), max_concurrency=64, clock=clock)
    limiter.start(0)
    limiter.finished(0, None, pushed_back=True)
    assert limiter.limit == 32
    limiter.start(0)
    limiter.finished(0, None, pushed_back=True)  # within the cooldown: no second halving
    assert limiter.limit == 32
    clock.now += 2
    for _ in range(32):
        limiter.start(0)
        limiter.finished(0, 10, pushed_back=False)
    assert 32.9 < limiter.limit < 33.1  # +1 per limit's worth of successes


def test_at_the_concurrency_limit_only_a_finished_call_makes_room() -> None:
    clock = Clock()
    limiter = DeploymentLimiter(deployment(), max_concurrency=2, clock=clock)
    limiter.start(0)
    limiter.start(0)
    assert limiter.wait_s(0) == math.inf
    limiter.finished(0, 1, pushed_back=False)
    assert limiter.wait_s(0) == 0
