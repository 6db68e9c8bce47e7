"""(l) The ledger's size: bytes per finished embedding job after a backfill and after the
retention windows, and a pruning pass over 1,000,000 rows while claims go on (PostgreSQL).

``python -m bench.retention [jobs] [rows]`` (PostgreSQL at HEADWAY_TEST_POSTGRES_URL). The
backfill's rows are written through ``LedgerRepository`` — the claims and finishes a worker's
ledger writer sends, 256 jobs a transaction — with each job's real result (1,536 dimensions)
and usage event; the pruner is the workers' own, with every window set to 0 h.
"""

from __future__ import annotations

import asyncio
import functools
import random
import statistics
import sys
import time
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.tenancy import fresh_postgres
from broker.settings import RetentionSettings
from schemas.results import JobResult, UsageEvent
from workers.ledger.database.engine import create_engine
from workers.ledger.database.transactions import Transactions, transactions_for
from workers.ledger.records import Claim
from workers.ledger.repository import LedgerRepository
from workers.ledger.retention.pruner import Pruner, PruneReport
from workers.settle.outcomes import event_id, finish_record

BATCH = 256
DIMENSIONS = 1536
NOW_WINDOWS = RetentionSettings(results_h=0, usage_h=0, jobs_d=8, usage_days_d=400)


async def database_bytes(engine: AsyncEngine, vacuum: bool = True) -> int:
    async with engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        if vacuum:
            await auto.execute(text("VACUUM"))
        return int(await auto.scalar(text("SELECT pg_database_size(current_database())")) or 0)


def embedding_result(rnd: random.Random) -> JobResult:
    return JobResult.model_validate(
        {
            "job_id": "template",
            "tenant": "acme",
            "batch_id": "backfill-1",
            "kind": "embedding",
            "route": "embed",
            "status": "succeeded",
            "output": {"embeddings": [[rnd.uniform(-1, 1) for _ in range(DIMENSIONS)]]},
            "provider": "openai",
            "deployment": "text-embedding-3-small",
            "usage": {"input_tokens": 300},
            "cost_usd": 0.000006,
            "attempts": 1,
            "completed_at": datetime.now(UTC).isoformat(),
        }
    )


async def backfill(engine: AsyncEngine, jobs: int) -> None:
    """``jobs`` embedding jobs claimed and finished as a worker's ledger writer would."""
    ledger = transactions_for(engine)
    repository = LedgerRepository("bench-worker", 60.0, time.time)
    template = embedding_result(random.Random(1))
    for start in range(0, jobs, BATCH):
        keys = [f"doc-{i:08d}" for i in range(start, min(jobs, start + BATCH))]
        claims = [Claim("acme", k, "backfill-1", "embedding", "embed") for k in keys]
        await ledger.run(functools.partial(repository.claim_many, claims=claims))
        finishes = []
        for key in keys:
            now = datetime.now(UTC)
            result = template.model_copy(update={"job_id": key, "completed_at": now})
            event = UsageEvent(
                event_id=event_id("acme", key, 1, 0),
                tenant="acme",
                job_id=key,
                batch_id="backfill-1",
                route="embed",
                provider="openai",
                deployment="text-embedding-3-small",
                input_tokens=300,
                output_tokens=0,
                cost_usd=0.000006,
                timestamp=now,
            )
            finishes.append(
                finish_record(result, result.model_dump_json(), [(event, event.model_dump_json())])
            )
        await ledger.run(functools.partial(repository.finish_many, finishes=finishes))
    await ledger.close()


async def bytes_per_job(jobs: int) -> dict[str, float]:
    """Database bytes per job: empty, after the backfill, after a pruning pass (VACUUM each)."""
    async with fresh_postgres() as url:
        engine = create_engine(url)
        try:
            empty = await database_bytes(engine)
            started = time.monotonic()
            await backfill(engine, jobs)
            wrote_s = time.monotonic() - started
            full = await database_bytes(engine)
            ledger = transactions_for(engine)
            report = await Pruner(ledger.run, engine, NOW_WINDOWS, owner="bench").prune()
            pruned = await database_bytes(engine)
        finally:
            await engine.dispose()
    return {
        "jobs": jobs,
        "write_s": wrote_s,
        "after_backfill": (full - empty) / jobs,
        "after_windows": (pruned - empty) / jobs,
        "prune_s": report.seconds,
        "longest_batch_s": report.longest_batch_s,
        "moved": report.moved,
        "rolled_up": report.usage_rolled_up,
    }


FILL = """
INSERT INTO jobs (tenant, job_id, status, batch_id, kind, route, provider, deployment,
  attempts, input_tokens, output_tokens, cost_nusd, lease_owner, lease_expires_at, claims,
  result_json, created_at, updated_at, completed_at)
SELECT 'acme', 'old-' || i, 'succeeded', 'backfill-old', 'chat', 'summarize', 'openai',
  'gpt-4o-mini', 1, 500, 200, 195000, 'w', 0, 1, :body, at, at, at
FROM generate_series(CAST(:start AS integer), CAST(:stop AS integer)) AS i,
  LATERAL (SELECT CAST(:at AS double precision) + i * 0.001 AS at) AS t;
INSERT INTO usage_events (event_id, tenant, job_id, batch_id, route, provider, deployment,
  input_tokens, output_tokens, cost_nusd, cached, timestamp, payload)
SELECT 'old-event-' || i, 'acme', 'old-' || i, 'backfill-old', 'summarize', 'openai',
  'gpt-4o-mini', 500, 200, 195000, false, at, :payload
FROM generate_series(CAST(:start AS integer), CAST(:stop AS integer)) AS i,
  LATERAL (SELECT CAST(:at AS double precision) + i * 0.001 AS at) AS t;
"""


async def prune_at_scale(rows: int) -> dict[str, float]:
    """``rows`` finished chat jobs (and as many usage events) pruned in one pass while a
    worker's claims and finishes go on beside it: the pass's time, its longest batch, and the
    claim-and-finish latency before and during it."""
    body = '{"output": {"text": "' + "a summary " * 50 + '", "finish_reason": "stop"}}'
    payload = '{"event_id": "x", "tenant": "acme", "cost_usd": 0.000195}'
    async with fresh_postgres() as url:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                for start in range(0, rows, 200_000):
                    stop = min(rows, start + 200_000) - 1
                    for statement in FILL.strip().split(";"):
                        if statement.strip():
                            await conn.execute(
                                text(statement),
                                {"body": body, "payload": payload, "at": 1e9, "start": start}
                                | {"stop": stop},
                            )
            async with engine.connect() as conn:
                auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await auto.execute(text("VACUUM ANALYZE"))
            ledger = transactions_for(engine)
            before = await _claim_latencies(ledger, 3.0)
            pruner = Pruner(ledger.run, engine, NOW_WINDOWS, owner="bench")
            stop_claims = asyncio.Event()
            during_task = asyncio.create_task(_claim_latencies(ledger, 3600.0, stop_claims))
            report: PruneReport = await pruner.prune()
            stop_claims.set()
            during = await during_task
        finally:
            await engine.dispose()
    return {
        "rows": rows,
        "prune_s": report.seconds,
        "longest_batch_s": report.longest_batch_s,
        "moved": report.moved,
        "rolled_up": report.usage_rolled_up,
        "reindexed": len(report.reindexed),
        "claims_before_p50_ms": statistics.median(before) * 1000,
        "claims_before_max_ms": max(before) * 1000,
        "claims_during_p50_ms": statistics.median(during) * 1000,
        "claims_during_p99_ms": _p99(during) * 1000,
        "claims_during_max_ms": max(during) * 1000,
        "claim_rounds_during": len(during),
    }


async def _claim_latencies(
    ledger: Transactions, seconds: float, stop: asyncio.Event | None = None
) -> list[float]:
    """Claim and finish 64 new jobs at a time (as a worker's writer does) for ``seconds`` or
    until ``stop``: the time each round took."""

    repository = LedgerRepository("live-worker", 60.0, time.time)
    template = JobResult.model_validate(
        {
            "job_id": "t",
            "tenant": "live",
            "status": "succeeded",
            "output": {"text": "ok", "finish_reason": "stop"},
            "completed_at": datetime.now(UTC).isoformat(),
        }
    )
    took: list[float] = []
    ends = time.monotonic() + seconds
    n = 0
    while time.monotonic() < ends and not (stop is not None and stop.is_set()):
        keys = [f"live-{n + i}" for i in range(64)]
        n += 64
        started = time.monotonic()
        claims = [Claim("live", k, None, "chat", "summarize") for k in keys]
        await ledger.run(functools.partial(repository.claim_many, claims=claims))
        finishes = [
            finish_record(r, r.model_dump_json(), [])
            for r in (template.model_copy(update={"job_id": k}) for k in keys)
        ]
        await ledger.run(functools.partial(repository.finish_many, finishes=finishes))
        took.append(time.monotonic() - started)
        await asyncio.sleep(0.01)
    return took


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def markdown(sizes: dict[str, float], scale: dict[str, float]) -> list[str]:
    return [
        "## (l) The ledger's size: a backfill, then its retention windows (PostgreSQL)",
        "",
        f"{int(sizes['jobs']):,} embedding jobs ({DIMENSIONS} dimensions), each claimed and "
        "finished through the workers' `LedgerRepository` (256 a transaction) with its result "
        "and usage event; then one pruning pass with every window at 0 h (the workers' "
        "`Pruner`); `pg_database_size` after `VACUUM`, less the empty ledger's, per job.",
        "",
        "| stage | bytes per job |",
        "|---|---|",
        f"| right after the backfill | {sizes['after_backfill']:,.0f} |",
        f"| after the windows (moved, usage summed, indexes rebuilt) | "
        f"**{sizes['after_windows']:,.0f}** (target ≤ 300) |",
        "",
        f"The pass moved {int(sizes['moved']):,} jobs and summed {int(sizes['rolled_up']):,} "
        f"usage events in {sizes['prune_s']:.1f} s (longest batch "
        f"{sizes['longest_batch_s'] * 1000:.0f} ms).",
        "",
        f"**At scale**: {int(scale['rows']):,} finished jobs and as many usage events, pruned "
        "in one pass (batches of 1,000) while a writer claims and finishes 64 new jobs a "
        "round beside it:",
        "",
        "| pass | longest batch | claim + finish round before: p50 / max | during: p50 / "
        "p99 / max |",
        "|---|---|---|---|",
        f"| {scale['prune_s']:.0f} s ({scale['moved'] / scale['prune_s']:,.0f} jobs/s) | "
        f"{scale['longest_batch_s'] * 1000:.0f} ms | "
        f"{scale['claims_before_p50_ms']:.1f} / {scale['claims_before_max_ms']:.1f} ms | "
        f"{scale['claims_during_p50_ms']:.1f} / {scale['claims_during_p99_ms']:.1f} / "
        f"{scale['claims_during_max_ms']:.1f} ms |",
        "",
    ]


async def main(jobs: int, rows: int) -> None:
    sizes = await bytes_per_job(jobs)
    print(sizes, flush=True)
    scale = await prune_at_scale(rows)
    print(scale, flush=True)
    print("\n".join(markdown(sizes, scale)))


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 100_000,
            int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000,
        )
    )
