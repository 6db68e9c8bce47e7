"""SIGTERM during load: in-flight jobs finish, offsets are committed, and a restarted worker
re-runs nothing that finished. Real worker processes, PostgreSQL, real HTTP."""

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
from tests.helpers import chat_job
from workers.devstack.simulator import SimulatorServer

JOBS = size(1500, 5000)
CONCURRENCY = 64


async def test_sigterm_drains_in_flight_jobs_and_a_restart_repeats_none(
    make_settings: Callable[..., Settings],
    postgres_url: str,
    simulator: SimulatorServer,
    tmp_path: Path,
    figures: Callable[..., None],
) -> None:
    simulator.config.latency_ms = 20
    settings = make_settings(
        database_url=postgres_url,
        config=write_config(tmp_path, simulator),
        concurrency=CONCURRENCY,
    )
    await create_topics(settings, load_config(settings.config))
    async with HeadwayClient(settings) as client:
        await client.submit_many(chat_job(f"job-{i}", batch_id="term") for i in range(JOBS))
    first = spawn_worker(settings)
    try:
        await results(settings, JOBS // 5)
    finally:
        in_flight_at_stop = simulator.stats.in_flight
        code = await asyncio.to_thread(stop, first, signal.SIGTERM)
    assert code == 0, stderr_tail(first)
    done_by_first = sum(1 for n in simulator.stats.jobs.values() if n)
    second = spawn_worker(settings)
    try:
        collected = await results(settings, JOBS)
    finally:
        assert await asyncio.to_thread(stop, second, signal.SIGTERM) == 0, stderr_tail(second)
    copies = assert_one_result_each(collected, {f"job-{i}" for i in range(JOBS)})
    calls = sum(simulator.stats.jobs.values())
    assert calls == JOBS
    assert max(simulator.stats.jobs.values()) == 1
    figures(
        jobs=JOBS,
        provider_calls=calls,
        in_flight_at_sigterm=in_flight_at_stop,
        called_before_restart=done_by_first,
        result_messages=copies,
    )
