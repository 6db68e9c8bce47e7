"""Retention steps on SQLite and PostgreSQL: finished jobs move out of ``jobs`` without their
result bodies, usage events roll up into days, what is past its window goes, and one worker at
a time holds the pruner's lease."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from schemas.results import JobResult, UsageEvent
from workers.ledger import retention
from workers.ledger.database.models import FinishedJobRow, JobRow, UsageDailyRow, UsageRow
from workers.ledger.database.transactions import Connection, Transactions
from workers.ledger.records import Claim
from workers.ledger.repository import LedgerRepository
from workers.settle.outcomes import event_id, finish_record

DAY = 86_400.0
T0 = 1_790_000_000.0  # 2026-09-21T12:53:20Z


def result(job_id: str, at: float, status: str = "succeeded", **fields: Any) -> JobResult:
    values: dict[str, Any] = {
        "job_id": job_id,
        "tenant": "acme",
        "batch_id": "nightly",
        "kind": "embedding",
        "route": "embed",
        "status": status,
        "provider": "openai",
        "deployment": "text-embedding-3-small",
        "usage": {"input_tokens": 300},
        "cost_usd": 0.000006,
        "attempts": 1,
        "completed_at": datetime.fromtimestamp(at, UTC).isoformat(),
    }
    if status == "succeeded":
        values["output"] = {"embeddings": [[0.25] * 1536]}
    else:
        values["error"] = {"code": "provider_error", "message": "the provider answered 500"}
    return JobResult.model_validate(values | fields)


async def finished(ledger: Transactions, *results: JobResult) -> None:
    """Claim and finish each result's job, with one usage event each at its completion."""
    repository = LedgerRepository("w1", 60.0, lambda: T0)
    claims = [Claim(r.tenant, r.job_id, r.batch_id, "embedding", r.route) for r in results]
    await ledger.run(functools.partial(repository.claim_many, claims=claims))
    finishes = []
    for r in results:
        event = UsageEvent(
            event_id=event_id(r.tenant, r.job_id, 1, 0),
            tenant=r.tenant,
            job_id=r.job_id,
            batch_id=r.batch_id,
            route=r.route or "",
            provider=r.provider or "",
            deployment=r.deployment or "",
            input_tokens=r.usage.input_tokens,
            output_tokens=0,
            cost_usd=r.cost_usd,
            timestamp=r.completed_at,
        )
        finishes.append(finish_record(r, r.model_dump_json(), [(event, event.model_dump_json())]))
    await ledger.run(functools.partial(repository.finish_many, finishes=finishes))


async def running(ledger: Transactions, job_id: str) -> None:
    repository = LedgerRepository("w1", 60.0, lambda: T0)
    claim = Claim("acme", job_id, "nightly", "embedding", "embed")
    await ledger.run(functools.partial(repository.claim_many, claims=[claim]))


async def rows(ledger: Transactions, model: Any) -> list[Any]:
    async def read(conn: Connection) -> list[Any]:
        return list((await conn.execute(select(model.__table__))).all())

    return await ledger.run(read)


async def count(ledger: Transactions, model: Any) -> int:
    async def read(conn: Connection) -> int:
        return int((await conn.execute(select(func.count()).select_from(model))).scalar_one())

    return await ledger.run(read)


async def test_a_finished_job_past_the_window_moves_out_of_jobs_without_its_result_body(
    ledger: Transactions,
) -> None:
    await finished(ledger, result("old", T0), result("old-failed", T0 + 1, status="failed"))
    await finished(ledger, result("recent", T0 + DAY))
    await running(ledger, "still-running")

    moved = await ledger.run(functools.partial(retention.move_finished, before=T0 + 10, limit=100))

    assert moved == 2
    assert sorted(r.job_id for r in await rows(ledger, JobRow)) == ["recent", "still-running"]
    kept = {r.job_id: r for r in await rows(ledger, FinishedJobRow)}
    assert sorted(kept) == ["old", "old-failed"]
    old = kept["old"]
    assert (old.status, old.batch_id, old.route, old.provider) == (
        "succeeded",
        "nightly",
        "embed",
        "openai",
    )
    assert (old.input_tokens, old.cost_nusd, old.completed_at) == (300, 6000, T0)
    assert old.error_code is None
    assert kept["old-failed"].status == "failed"
    assert kept["old-failed"].error_code == "provider_error"


async def test_moves_take_the_oldest_first_and_at_most_the_limit(ledger: Transactions) -> None:
    await finished(ledger, *(result(f"job-{i}", T0 + 100 - i) for i in range(10)))
    step = functools.partial(retention.move_finished, before=T0 + DAY, limit=4)

    assert [await ledger.run(step) for _ in range(4)] == [4, 4, 2, 0]
    first = await ledger.run(functools.partial(retention.move_finished, before=T0, limit=1))
    assert first == 0
    assert await count(ledger, JobRow) == 0
    assert await count(ledger, FinishedJobRow) == 10


async def test_usage_events_past_their_window_are_summed_per_day_and_deleted(
    ledger: Transactions,
) -> None:
    await finished(ledger, *(result(f"a-{i}", T0 + i) for i in range(5)))
    await finished(ledger, result("next-day", T0 + DAY))
    await finished(ledger, result("other-batch", T0 + 7, batch_id=None))
    step = functools.partial(retention.roll_up_usage, before=T0 + DAY + 1, limit=3)

    assert [await ledger.run(step) for _ in range(4)] == [3, 3, 1, 0]

    assert await count(ledger, UsageRow) == 0
    days = {(r.day, r.batch_id): r for r in await rows(ledger, UsageDailyRow)}
    assert sorted(days) == [("2026-09-21", ""), ("2026-09-21", "nightly"), ("2026-09-22", "nightly")]
    nightly = days[("2026-09-21", "nightly")]
    assert (nightly.events, nightly.input_tokens, nightly.cost_nusd) == (5, 1500, 30_000)
    assert days[("2026-09-22", "nightly")].events == 1


async def test_moved_jobs_past_the_lanes_retention_and_old_usage_days_are_deleted(
    ledger: Transactions,
) -> None:
    await finished(ledger, result("week-old", T0), result("yesterday", T0 + 7 * DAY))
    await ledger.run(functools.partial(retention.move_finished, before=T0 + 8 * DAY, limit=10))
    await ledger.run(functools.partial(retention.roll_up_usage, before=T0 + 8 * DAY, limit=10))

    gone = await ledger.run(functools.partial(retention.delete_finished, before=T0 + 1, limit=10))
    days = await ledger.run(
        functools.partial(retention.delete_usage_days, before=T0 + 7 * DAY, limit=10)
    )

    assert gone == 1
    assert [r.job_id for r in await rows(ledger, FinishedJobRow)] == ["yesterday"]
    assert days == 1
    assert [r.day for r in await rows(ledger, UsageDailyRow)] == ["2026-09-28"]


async def test_one_worker_at_a_time_holds_the_pruners_lease(ledger: Transactions) -> None:
    def take(owner: str, now: float) -> Any:
        return functools.partial(
            retention.take_lease, name="prune", owner=owner, now=now, until=now + 60
        )

    assert await ledger.run(take("w1", T0))
    assert not await ledger.run(take("w2", T0 + 1))
    assert await ledger.run(take("w1", T0 + 30))  # its holder renews it
    assert await ledger.run(take("w2", T0 + 91))  # lapsed: another worker takes it
    await ledger.run(functools.partial(retention.release_lease, name="prune", owner="w2"))
    assert await ledger.run(take("w1", T0 + 92))
