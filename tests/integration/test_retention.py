"""Retention steps on SQLite and PostgreSQL: finished jobs move out of ``jobs`` without their
result bodies, usage events roll up into days, what is past its window goes, and one worker at
a time holds the pruner's lease."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.settings import RetentionSettings
from schemas.results import JobResult, UsageEvent
from workers.cli.exports import ResultFormat, batch_lines
from workers.ledger import queries, spill_rows
from workers.ledger.database.engine import create_engine
from workers.ledger.database.models import FinishedJobRow, JobRow, UsageDailyRow, UsageRow
from workers.ledger.database.transactions import Connection, Transactions
from workers.ledger.records import AlreadyFinished, Claim, Claimed
from workers.ledger.repository import LedgerRepository
from workers.ledger.retention import finished_rows
from workers.ledger.retention import steps as retention
from workers.ledger.retention.pruner import Pruner
from workers.ledger.spill_rows import SpilledRecord
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
    assert sorted(days) == [
        ("2026-09-21", ""),
        ("2026-09-21", "nightly"),
        ("2026-09-22", "nightly"),
    ]
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


async def moved_away(ledger: Transactions) -> None:
    await ledger.run(functools.partial(retention.move_finished, before=T0 + 8 * DAY, limit=100))


async def claim(ledger: Transactions, job_id: str, reopen: bool = False) -> Any:
    repository = LedgerRepository("w2", 60.0, lambda: T0 + DAY)
    work = functools.partial(
        repository.claim_many,
        claims=[Claim("acme", job_id, "nightly", "embedding", "embed", reopen=reopen)],
    )
    [outcome] = await ledger.run(work)
    return outcome


async def test_a_job_redelivered_after_its_row_moved_is_answered_with_what_was_kept(
    ledger: Transactions,
) -> None:
    await finished(ledger, result("done", T0), result("broke", T0 + 1, status="failed"))
    await moved_away(ledger)

    done, broke = await claim(ledger, "done"), await claim(ledger, "broke")

    assert isinstance(done, AlreadyFinished) and isinstance(broke, AlreadyFinished)
    assert done.usage_payloads == []  # published, and spent, when it ran
    again = JobResult.model_validate_json(done.result_json)
    assert again.output_expired is True and again.output is None
    assert (again.status, again.usage.input_tokens, again.cost_usd) == ("succeeded", 300, 6e-06)
    assert (again.provider, again.batch_id, again.completed_at.timestamp()) == (
        "openai",
        "nightly",
        T0,
    )
    failed = JobResult.model_validate_json(broke.result_json)
    assert failed.error is not None and failed.error.code == "provider_error"
    assert await count(ledger, JobRow) == 0  # the claims' new rows went again
    assert await count(ledger, FinishedJobRow) == 2


async def test_a_replay_of_a_moved_failed_job_runs_again_and_counts_its_claims_on(
    ledger: Transactions,
) -> None:
    await finished(ledger, result("broke", T0, status="failed"))
    await moved_away(ledger)

    outcome = await claim(ledger, "broke", reopen=True)

    assert outcome == Claimed(2)  # its first run's usage events had generation 1
    assert await count(ledger, FinishedJobRow) == 0
    [row] = await rows(ledger, JobRow)
    assert (row.status, row.claims) == ("running", 2)


async def test_a_replay_of_a_moved_succeeded_job_is_answered_not_run(
    ledger: Transactions,
) -> None:
    await finished(ledger, result("done", T0))
    await moved_away(ledger)

    outcome = await claim(ledger, "done", reopen=True)

    assert isinstance(outcome, AlreadyFinished)
    assert await count(ledger, JobRow) == 0


async def test_a_late_result_of_a_moved_job_does_not_store_a_second_one(
    ledger: Transactions,
) -> None:
    await finished(ledger, result("done", T0))
    await moved_away(ledger)
    repository = LedgerRepository("w2", 60.0, lambda: T0 + DAY)
    late = result("done", T0 + DAY, status="rejected")
    record = finish_record(late, late.model_dump_json(), [])

    [outcome] = await ledger.run(functools.partial(repository.settle_many, finishes=[record]))

    assert isinstance(outcome, AlreadyFinished)
    assert JobResult.model_validate_json(outcome.result_json).status == "succeeded"
    assert await count(ledger, JobRow) == 0


def pruner(ledger: Transactions, engine: AsyncEngine, now: float, owner: str = "w1") -> Pruner:
    settings = RetentionSettings(results_h=24, usage_h=48, jobs_d=8, usage_days_d=30, batch=2)
    return Pruner(ledger.run, engine, settings, owner=owner, clock=lambda: now)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def test_a_pass_moves_sums_and_deletes_each_by_its_own_window_in_small_batches(
    ledger: Transactions, engine: AsyncEngine
) -> None:
    await finished(ledger, *(result(f"old-{i}", T0 + i) for i in range(5)))
    await finished(ledger, result("yesterday", T0 + 0.9 * DAY))
    now = T0 + 2 * DAY + 60  # old-*: past 24 h and 48 h; yesterday: past 24 h only

    dry = await pruner(ledger, engine, now).prune(dry_run=True)
    assert (dry.moved, dry.usage_rolled_up, dry.finished_deleted) == (6, 5, 0)
    assert await count(ledger, JobRow) == 6  # a dry run changes nothing

    report = await pruner(ledger, engine, now).prune()

    assert (report.moved, report.usage_rolled_up, report.finished_deleted) == (6, 5, 0)
    assert await count(ledger, JobRow) == 0
    assert await count(ledger, UsageRow) == 1  # yesterday's, inside its 48 h
    expected = ["jobs", "usage_events"] if engine.dialect.name == "postgresql" else []
    assert report.reindexed == expected

    later = await pruner(ledger, engine, T0 + 8 * DAY + 100).prune()
    assert (later.finished_deleted, later.usage_rolled_up) == (5, 1)
    assert [r.job_id for r in await rows(ledger, FinishedJobRow)] == ["yesterday"]


async def test_a_worker_finds_the_lease_held_by_another_and_prunes_nothing(
    ledger: Transactions, engine: AsyncEngine
) -> None:
    await finished(ledger, result("old", T0))
    now = T0 + 3 * DAY
    await ledger.run(
        functools.partial(retention.take_lease, name="prune", owner="w9", now=now, until=now + 60)
    )

    report = await pruner(ledger, engine, now).prune()

    assert not report.held and report.moved == 0
    assert await count(ledger, JobRow) == 1


async def test_status_usage_and_spend_read_the_same_before_and_after_a_pass(
    ledger: Transactions, engine: AsyncEngine
) -> None:
    await finished(ledger, *(result(f"old-{i}", T0 + i) for i in range(4)))
    await finished(ledger, result("broke", T0 + 5, status="failed"))
    await running(ledger, "still-running")

    async def read() -> tuple[Any, ...]:
        status = await queries.batch_status(engine, "nightly", "acme")
        return (
            status.by_status,
            status.cost_usd,
            status.input_tokens,
            await queries.usage_summary(engine, "acme"),
            await queries.usage_summary(engine, "acme", since=T0),
            await queries.tenant_spend_usd(engine, "acme"),
        )

    before = await read()
    report = await pruner(ledger, engine, T0 + 3 * DAY).prune()
    assert (report.moved, report.usage_rolled_up) == (5, 5)

    assert await read() == before
    assert before[0] == {"succeeded": 4, "failed": 1, "running": 1}


async def test_a_batchs_export_keeps_moved_jobs_marked_as_expired(
    ledger: Transactions, engine: AsyncEngine
) -> None:
    await finished(ledger, result("old", T0), result("new", T0 + DAY))
    await ledger.run(functools.partial(retention.move_finished, before=T0 + 1, limit=10))

    lines = [
        json.loads(line)
        async for line in batch_lines(engine, "nightly", "acme", ResultFormat.OPENAI_BATCH)
    ]

    assert [line["custom_id"] for line in lines] == ["old", "new"]
    assert lines[0]["response"] is None and lines[0]["error"]["code"] == "output_expired"
    assert lines[1]["response"]["status_code"] == 200


async def test_a_spilled_copy_of_a_moved_job_is_not_counted_as_queued(
    ledger: Transactions,
) -> None:
    await finished(ledger, result("done", T0))
    await moved_away(ledger)
    copy = SpilledRecord(
        "normal", "acme", "acme", "done", "nightly", "jobs", 0, 7, 0, None, b"{}", b"[]"
    )
    other = SpilledRecord(
        "normal", "acme", "acme", "waiting", "nightly", "jobs", 0, 8, 0, None, b"{}", b"[]"
    )
    await ledger.run(functools.partial(spill_rows.store, records=[copy, other], now=T0))

    queued = await ledger.run(
        functools.partial(spill_rows.queued_in_batch, batch_id="nightly", tenant="acme")
    )

    assert queued == 1


def test_a_kept_error_code_this_version_does_not_know_is_kept_as_text() -> None:
    kept = finished_rows.Moved(
        "acme", "j", "failed", "a_future_code", None, "chat", "r", "p", "d", 1, 1, 0, 0, 0, T0
    )

    again = JobResult.model_validate_json(finished_rows.expired_result(kept))

    assert again.error is not None and again.error.code == "a_future_code"
    assert again.output_expired
