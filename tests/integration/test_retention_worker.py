"""A worker prunes its ledger as it runs: finished jobs past the results window move, and a
job redelivered after that is answered from what was kept — over the real broker, real HTTP
to the simulator and a real ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.client import HeadwayClient
from broker.config import development_config
from broker.settings import Settings
from tests.helpers import chat_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer
from workers.ledger.database.engine import create_engine
from workers.ledger.database.models import FinishedJobRow, JobRow
from workers.ledger.queries import batch_status

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
