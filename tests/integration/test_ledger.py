"""The ledger is the source of truth for idempotency: claims, leases, one stored result."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest

from broker.errors import LedgerRefused
from broker.settings import LedgerSettings
from workers.ledger.database.engine import create_engine
from workers.ledger.database.models import RowStatus
from workers.ledger.queries import tenant_spend_usd
from workers.ledger.records import (
    AlreadyFinished,
    Claim,
    Claimed,
    Finish,
    HeldElsewhere,
    Stored,
    UsageRecord,
)
from workers.ledger.repository import LedgerRepository
from workers.ledger.writer import LedgerWriter
from workers.runtime.readiness import Readiness


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def writers(
    database_url: str, clock: Clock
) -> AsyncIterator[tuple[LedgerWriter, LedgerWriter]]:
    """Two workers' ledger writers over the same database."""
    engine = create_engine(database_url)
    settings = LedgerSettings(str(engine.url), "test", flush_ms=1)
    a = LedgerWriter(engine, LedgerRepository("worker-a", 30.0, clock), settings, Readiness())
    b = LedgerWriter(engine, LedgerRepository("worker-b", 30.0, clock), settings, Readiness())
    async with a, b:
        yield a, b
    await engine.dispose()


def claim(job_id: str) -> Claim:
    return Claim("acme", job_id, "batch", "chat", "summarize")


def finish(job_id: str, text: str, cost_nusd: int = 0, event: str | None = None) -> Finish:
    usage = ()
    if event:
        usage = (
            UsageRecord(
                event, "summarize", "sim", "m", 10, 5, cost_nusd, False, 1.0, f'{{"e":"{event}"}}'
            ),
        )
    return Finish(
        tenant="acme",
        job_id=job_id,
        status=RowStatus.SUCCEEDED,
        result_json=text,
        completed_at=2.0,
        batch_id="batch",
        cost_nusd=cost_nusd,
        usage=usage,
    )


async def test_first_claim_wins_and_a_second_worker_sees_it_held(
    writers: tuple[LedgerWriter, LedgerWriter],
) -> None:
    a, b = writers
    assert await a.claim(claim("j1")) == Claimed(1)
    held = await b.claim(claim("j1"))
    assert isinstance(held, HeldElsewhere) and held.owner == "worker-a"


async def test_a_finished_job_is_reported_with_its_stored_result_and_usage(
    writers: tuple[LedgerWriter, LedgerWriter],
) -> None:
    a, b = writers
    await a.claim(claim("j1"))
    assert await a.finish(finish("j1", '{"r":1}', 500, "ev-1")) == Stored()
    again = await b.claim(claim("j1"))
    assert again == AlreadyFinished('{"r":1}', ['{"e":"ev-1"}'])


async def test_an_expired_lease_is_taken_over_with_a_new_generation(
    writers: tuple[LedgerWriter, LedgerWriter], clock: Clock
) -> None:
    a, b = writers
    await a.claim(claim("j1"))
    clock.now += 31
    assert await b.claim(claim("j1")) == Claimed(2)
    assert isinstance(await a.claim(claim("j1")), HeldElsewhere)


async def test_renewed_leases_do_not_expire(
    writers: tuple[LedgerWriter, LedgerWriter], clock: Clock
) -> None:
    a, b = writers
    await a.claim(claim("j1"))
    clock.now += 20
    assert await a.renew_leases() == 1
    clock.now += 20
    assert isinstance(await b.claim(claim("j1")), HeldElsewhere)


async def test_a_released_lease_is_not_renewed_so_the_next_run_can_claim_it(
    writers: tuple[LedgerWriter, LedgerWriter], clock: Clock
) -> None:
    a, b = writers
    await a.claim(claim("parked"))
    await a.claim(claim("running"))
    await a.release(("acme", "parked"))  # parked on the retry topic
    clock.now += 1
    assert await a.renew_leases() == 1  # only the job it is still running
    assert await b.claim(claim("parked")) == Claimed(2)
    assert isinstance(await b.claim(claim("running")), HeldElsewhere)


async def test_a_replayed_failed_job_is_reopened_and_a_succeeded_one_is_not(
    writers: tuple[LedgerWriter, LedgerWriter],
) -> None:
    a, b = writers
    for job_id, status in (("broke", RowStatus.FAILED), ("fine", RowStatus.SUCCEEDED)):
        await a.claim(claim(job_id))
        await a.finish(dataclasses.replace(finish(job_id, "{}"), status=status))
    replay = {"reopen": True}
    assert await b.claim(dataclasses.replace(claim("broke"), **replay)) == Claimed(2)
    assert isinstance(await b.claim(claim("fine")), AlreadyFinished)
    assert isinstance(await b.claim(dataclasses.replace(claim("fine"), **replay)), AlreadyFinished)
    assert isinstance(await a.claim(claim("broke")), HeldElsewhere)  # the replay holds it


async def test_the_first_finisher_wins_and_the_second_is_told_the_stored_result(
    writers: tuple[LedgerWriter, LedgerWriter], clock: Clock
) -> None:
    a, b = writers
    await a.claim(claim("j1"))
    clock.now += 31
    await b.claim(claim("j1"))
    assert await b.finish(finish("j1", '{"by":"b"}')) == Stored()
    late = await a.finish(finish("j1", '{"by":"a"}'))
    assert isinstance(late, AlreadyFinished) and late.result_json == '{"by":"b"}'


async def test_duplicates_within_one_batch_are_claimed_once(
    writers: tuple[LedgerWriter, LedgerWriter],
) -> None:
    import asyncio

    a, _ = writers
    outcomes = await asyncio.gather(*(a.claim(claim("dup")) for _ in range(3)))
    assert sum(isinstance(o, Claimed) for o in outcomes) == 1
    assert sum(isinstance(o, HeldElsewhere) for o in outcomes) == 2


async def test_a_settled_rejection_is_stored_once(
    writers: tuple[LedgerWriter, LedgerWriter],
) -> None:
    a, b = writers
    assert await a.settle(finish("r1", '{"rejected":1}')) == Stored()
    second = await b.settle(finish("r1", '{"rejected":2}'))
    assert isinstance(second, AlreadyFinished) and second.result_json == '{"rejected":1}'


async def test_spend_is_the_sum_of_distinct_usage_events(
    writers: tuple[LedgerWriter, LedgerWriter], database_url: str
) -> None:
    a, _ = writers
    for i in range(5):
        await a.claim(claim(f"j{i}"))
        await a.finish(finish(f"j{i}", f'{{"i":{i}}}', 1_234_567, f"ev-{i}"))
    engine = create_engine(database_url)
    try:
        assert await tenant_spend_usd(engine, "acme") == pytest.approx(5 * 0.001234567)
    finally:
        await engine.dispose()


async def test_many_concurrent_finishes_flush_together(
    writers: tuple[LedgerWriter, LedgerWriter],
) -> None:
    import asyncio

    a, _ = writers
    await asyncio.gather(*(a.claim(claim(f"c{i}")) for i in range(300)))
    outcomes = await asyncio.gather(
        *(a.finish(finish(f"c{i}", f'{{"i":{i}}}')) for i in range(300))
    )
    assert all(o == Stored() for o in outcomes)


async def test_a_claim_of_a_row_held_by_the_workers_own_lease_takes_it_over(
    writers: tuple[LedgerWriter, LedgerWriter],
) -> None:
    """The pipeline claims each job once at a time, so its own running row is an orphan of a
    claim whose answer was lost; another worker still sees it held."""
    a, b = writers
    assert await a.claim(claim("j1")) == Claimed(1)
    assert await a.claim(claim("j1")) == Claimed(2)
    assert isinstance(await b.claim(claim("j1")), HeldElsewhere)


async def test_a_value_the_database_refuses_fails_its_own_operation_and_no_other(
    writers: tuple[LedgerWriter, LedgerWriter], database_url: str
) -> None:
    a, _ = writers
    postgres = database_url.startswith("postgresql")
    good = [a.claim(claim(f"g{i}")) for i in range(5)]
    too_big = a.finish(dataclasses.replace(finish("n1", "{}"), input_tokens=10**20))
    with_nul = a.claim(Claim("acme", "n2", "batch\x00", "chat", "summarize"))
    outcomes = await asyncio.gather(*good, too_big, with_nul, return_exceptions=True)

    assert outcomes[:5] == [Claimed(1)] * 5  # flushed with the refused ones, stored anyway
    assert isinstance(outcomes[5], LedgerRefused), outcomes[5]
    assert "refused a value" in str(outcomes[5])
    # PostgreSQL text holds no U+0000; SQLite stores it
    assert isinstance(outcomes[6], LedgerRefused) if postgres else outcomes[6] == Claimed(1)
    assert a.readiness.ledger_is_up  # a refused value is not an outage
    assert await a.claim(claim("after")) == Claimed(1)
