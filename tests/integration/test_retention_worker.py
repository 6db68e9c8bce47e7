"""A worker prunes its ledger as it runs: finished jobs past the results window move, and a
job redelivered after that is answered from what was kept — over the real broker, real HTTP
to the simulator and a real ledger."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.client import HeadwayClient
from broker.config import development_config
from broker.settings import Settings
from schemas.results import JobResult
from tests.helpers import chat_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer
from workers.ledger.database.engine import create_engine
from workers.ledger.database.models import FinishedJobRow, JobRow
from workers.ledger.database.transactions import transactions_for
from workers.ledger.queries import batch_status
from workers.ledger.records import Claim, Finish
from workers.ledger.repository import LedgerRepository
from workers.ledger.retention import steps
from workers.settle.outcomes import finish_record

JOBS = 20


async def test_a_redelivered_job_after_its_row_moved_gets_its_stored_result_without_output(
    make_settings: Callable[..., Settings], database_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(
        database_url=database_url, retain_results_h=0, retain_usage_h=0, prune_s=0.2
    )
    config = development_config(simulator.base_url)
    jobs = [chat_job(f"chat-{i}", batch_id="b1") for i in range(JOBS)]
    engine = create_engine(database_url)
    try:
        async with running_worker(settings, config), HeadwayClient(settings) as client:
            await client.submit_many(jobs)
            await read_topic(
                settings.kafka_bootstrap or "", settings.topics.results, until_keys=JOBS
            )
            async with asyncio.timeout(30):  # the worker's pruner moves them
                while await _count(engine, FinishedJobRow) < JOBS:  # noqa: ASYNC110 - polls the database
                    await asyncio.sleep(0.1)
            assert await _count(engine, JobRow) == 0
            calls = simulator.stats.chat_calls

            await client.submit_many(jobs[:3])  # the same records again
            results = await read_topic(
                settings.kafka_bootstrap or "",
                settings.topics.results,
                until_keys=JOBS,
                until_records=JOBS + 3,
            )
        status = await batch_status(engine, "b1")
    finally:
        await engine.dispose()

    assert simulator.stats.chat_calls == calls  # not run again
    for key in ("chat-0", "chat-1", "chat-2"):
        first, again = results.by_key[key]
        assert first["output"]["text"] and first.get("output_expired") is None
        assert again["output"] is None and again["output_expired"] is True
        for field in ("status", "usage", "provider", "deployment", "batch_id"):
            assert again[field] == first[field], field
        assert round(again["cost_usd"], 9) == round(first["cost_usd"], 9)  # stored in nano-USD
        stored_at = datetime.fromisoformat(again["completed_at"])
        assert abs(stored_at - datetime.fromisoformat(first["completed_at"])).total_seconds() < 1e-3
    assert status.by_status == {"succeeded": JOBS}


async def _count(engine: AsyncEngine, model: type[FinishedJobRow] | type[JobRow]) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(model))).scalar_one())


async def test_headway_ledger_prune_counts_then_prunes_and_waits_its_turn(
    database_url: str,
) -> None:
    settings = Settings(database_url=database_url, retain_results_h=0, retain_usage_h=0)
    engine = create_engine(database_url)
    ledger = transactions_for(engine)
    repository = LedgerRepository("w1", 60.0, time.time)
    try:
        claims = [Claim("acme", f"j{i}", "b1", "chat", "summarize") for i in range(3)]
        await ledger.run(functools.partial(repository.claim_many, claims=claims))
        finishes = [_finish(f"j{i}") for i in range(3)]
        await ledger.run(functools.partial(repository.finish_many, finishes=finishes))

        dry = await _prune(settings, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert "3 finished jobs would be moved" in " ".join(dry.stdout.split())
        assert await _count(engine, JobRow) == 3

        done = await _prune(settings)
        assert done.returncode == 0, done.stderr
        assert "3 finished jobs were moved" in " ".join(done.stdout.split())
        assert await _count(engine, FinishedJobRow) == 3

        now = time.time()
        await ledger.run(
            functools.partial(steps.take_lease, name="prune", owner="w9", now=now, until=now + 60)
        )
        held = await _prune(settings)
        assert held.returncode == 1 and "another worker is pruning" in held.stdout
    finally:
        await ledger.close()
        await engine.dispose()


def _finish(job_id: str) -> Finish:
    result = JobResult.model_validate(
        {
            "job_id": job_id,
            "tenant": "acme",
            "batch_id": "b1",
            "status": "succeeded",
            "output": {"text": "ok", "finish_reason": "stop"},
            "completed_at": datetime.now(UTC).isoformat(),
        }
    )
    return finish_record(result, result.model_dump_json(), [])


async def _prune(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HEADWAY_DATABASE_URL": settings.database_url,
        "HEADWAY_RETAIN_RESULTS_H": "0",
        "HEADWAY_RETAIN_USAGE_H": "0",
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "workers", "ledger", "prune", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
