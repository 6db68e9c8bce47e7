"""A deployment's rpm and tpm held across workers through the ledger (SQLite and PostgreSQL):
three workers asking as fast as they can are sent, together, at most the declared rate in any
60 s window, and close to it; unused tokens go back; a long deployment key still fits."""

from __future__ import annotations

import pytest

from broker.config import DeploymentConfig
from workers.calls.shared_pace import SharedPace, bucket_key
from workers.ledger.database.transactions import Transactions
from workers.ledger.quota_rows import QuotaLedger

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_three_workers_together_keep_under_the_declared_rpm_and_close_to_it(
    ledger: Transactions,
) -> None:
    clock = Clock()
    deployment = DeploymentConfig(provider="sim", model="m", rpm=600)
    workers = [SharedPace(ledger.run, QuotaLedger(), clock) for _ in range(3)]
    sent: list[float] = []
    next_try = [clock.now] * 3
    step = 0.005
    while clock.now < 1_000_000.0 + 150:
        for i, pace in enumerate(workers):
            if clock.now >= next_try[i]:
                wait = await pace.take(deployment, 0)
                if wait is None:
                    sent.append(clock.now)
                else:
                    next_try[i] = clock.now + wait
        clock.now += step
    most = 0
    start = 0
    for end, at in enumerate(sent):  # the most calls in any sliding 60 s window
        while sent[start] <= at - 60:
            start += 1
        most = max(most, end - start + 1)
    steady = [at for at in sent if 1_000_000.0 + 60 <= at < 1_000_000.0 + 120]
    assert most <= 600
    assert len(steady) >= 0.95 * 600


async def test_tokens_a_call_did_not_use_go_back_to_every_worker(ledger: Transactions) -> None:
    clock = Clock()
    deployment = DeploymentConfig(provider="sim", model="m", tpm=6000)  # 100 a second
    one, other = (SharedPace(ledger.run, QuotaLedger(), clock) for _ in range(2))
    assert await one.take(deployment, 90) is None
    assert await other.take(deployment, 90) is not None  # the bucket holds about a second
    one.settle(deployment, 90, used=10)  # 80 unused
    await one.close()  # (written back with its next lease, or on close)
    joined = SharedPace(ledger.run, QuotaLedger(), clock)  # no time has passed
    assert await joined.take(deployment, 60) is None


async def test_a_call_that_did_not_happen_gives_its_request_back(ledger: Transactions) -> None:
    clock = Clock()
    deployment = DeploymentConfig(provider="sim", model="m", rpm=60)  # 1 a second, 1 held
    pace = SharedPace(ledger.run, QuotaLedger(), clock)
    assert await pace.take(deployment, 0) is None
    assert await pace.take(deployment, 0) is not None
    pace.give_back(deployment, 0)
    assert await pace.take(deployment, 0) is None


def test_a_long_deployment_key_is_hashed_to_fit_its_column() -> None:
    long = DeploymentConfig(provider="azure-eu", model="x" * 100)
    assert len(bucket_key(long)) <= 64 and bucket_key(long) == bucket_key(long)
    assert bucket_key(DeploymentConfig(provider="p", model="m")) == "p:m"
