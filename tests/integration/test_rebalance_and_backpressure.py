"""Workers joining a busy group share the work without doing any job twice; a large backlog
never grows a worker's buffer past its bound."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from broker.client import HeadwayClient
from broker.config import development_config
from broker.settings import Settings
from tests.helpers import chat_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer


async def test_a_second_worker_joining_mid_batch_takes_partitions_without_duplicate_results(
    make_settings: Callable[..., Settings], postgres_url: str, simulator: SimulatorServer
) -> None:
    # 16 in flight at 50 ms: at most ~320 jobs/s, so the batch outlasts the second worker's join
    jobs, concurrency = 2000, 16
    simulator.config.latency_ms = 50
    config = development_config(simulator.base_url)
    first_settings = make_settings(database_url=postgres_url, concurrency=concurrency)
    second_settings = make_settings(database_url=postgres_url, concurrency=concurrency)
    assert first_settings.worker_id != second_settings.worker_id
    async with (
        running_worker(first_settings, config) as first,
        HeadwayClient(first_settings) as client,
    ):
        await client.submit_many(chat_job(f"r-{i}") for i in range(jobs))
        await read_topic(
            first_settings.kafka_bootstrap or "", first_settings.topics.results, until_keys=200
        )
        async with running_worker(second_settings, config) as second:
            results = await read_topic(
                first_settings.kafka_bootstrap or "",
                first_settings.topics.results,
                until_keys=jobs,
                timeout_s=120,
            )
            assert second.processed > 0, "the joining worker got no partitions"
            assert first.processed > 0
    assert results.distinct() == jobs
    for key, copies in results.by_key.items():
        assert len({c["completed_at"] for c in copies}) == 1, key
    calls = sum(simulator.stats.jobs.values())
    assert jobs <= calls <= jobs + 2 * concurrency, calls


@pytest.mark.parametrize("spill", [True, False], ids=["spilling", "pausing"])
async def test_a_backlog_larger_than_the_buffer_never_grows_memory(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    spill: bool,
) -> None:
    """What does not fit waits in the ledger (spilled) or, with spilling off, in Kafka (the
    lane pauses): either way the buffer stays at its bound."""
    jobs = 3000
    settings = make_settings(
        database_url=sqlite_url, concurrency=8, buffer_max_jobs=60, buffer_spill=spill
    )
    config = development_config(simulator.base_url)
    peak = 0
    async with HeadwayClient(settings) as client:
        from broker.admin import create_topics

        await create_topics(settings, config)
        await client.submit_many(chat_job(f"bp-{i}") for i in range(jobs))
    async with running_worker(settings, config) as worker:
        reading = asyncio.create_task(
            read_topic(
                settings.kafka_bootstrap or "",
                settings.topics.results,
                until_keys=jobs,
                timeout_s=120,
            )
        )
        while not reading.done():
            peak = max(peak, len(worker.scheduler))
            await asyncio.sleep(0.005)
        results = reading.result()
    assert results.distinct() == jobs
    # a lane is full at max(buffer_max_jobs // 3, concurrency) = 20 jobs; pausing, one fetch of
    # at most half that may land before the pause takes effect
    assert 0 < peak <= 30, f"buffer grew to {peak}"
    assert (worker.spill is not None and worker.spill.stored > jobs // 2) == spill
