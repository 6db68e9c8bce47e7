"""The same jobs submitted more than once — a producer retrying while the first copies are in
flight, then an operator re-running the whole backfill after it finished — cost one provider
call per job and yield one result per (tenant, job_id): every copy published is the stored one.
Two worker processes on PostgreSQL, real HTTP."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

from broker.admin import create_topics
from broker.client import HeadwayClient
from broker.config import load_config
from broker.settings import Settings
from tests.chaos.conftest import size
from tests.chaos.processes import (
    assert_one_result_each,
    results,
    spawn_worker,
    stderr_tail,
    stop,
    write_config,
)
from tests.helpers import chat_job, read_topic
from workers.devstack.simulator import SimulatorServer

JOBS = size(500, 1000)


async def test_jobs_submitted_three_times_are_called_once_with_one_result_each(
    make_settings: Callable[..., Settings],
    postgres_url: str,
    simulator: SimulatorServer,
    tmp_path: Path,
    figures: Callable[..., None],
) -> None:
    simulator.config.latency_ms = 50
    settings = make_settings(
        database_url=postgres_url, config=write_config(tmp_path, simulator), concurrency=64
    )
    await create_topics(settings, load_config(settings.config))
    jobs = [chat_job(f"job-{i}") for i in range(JOBS)]
    workers = [spawn_worker(settings), spawn_worker(settings)]
    try:
        async with HeadwayClient(settings) as client:
            await client.submit_many(jobs)
            await client.submit_many(reversed(jobs))  # a producer retry, while they run
        await results(settings, JOBS)
        async with HeadwayClient(settings) as client:
            await client.submit_many(jobs)  # the backfill re-run after it finished
        for _ in range(60):
            collected = await read_topic(
                settings.kafka_bootstrap or "",
                settings.topics.results,
                until_keys=10**9,
                timeout_s=2,
            )
            if sum(len(copies) for copies in collected.by_key.values()) >= 3 * JOBS:
                break
    finally:
        for process in workers:
            code = await asyncio.to_thread(stop, process, signal.SIGTERM)
            assert code == 0, stderr_tail(process)
    copies = assert_one_result_each(collected, {job["job_id"] for job in jobs})
    assert copies >= 3 * JOBS  # each submission is answered, always with the stored result
    assert sum(simulator.stats.jobs.values()) == JOBS
    assert max(simulator.stats.jobs.values()) == 1
    figures(
        jobs=JOBS,
        submissions=3 * JOBS,
        provider_calls=sum(simulator.stats.jobs.values()),
        result_messages=copies,
        distinct_results=len(collected.by_key),
    )
