"""SIGKILL a worker process three times during a batch while another keeps running, starting a
new one each time: every job gets one result (re-published copies identical), provider calls
exceed the job count by at most what was in flight at the kills, and the ledger's spend equals
the distinct usage events. Real worker processes, PostgreSQL, real HTTP."""

from __future__ import annotations

import asyncio
import signal
import time
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
    running_jobs_of,
    spawn_worker,
    spend_matches_usage_events,
    stderr_tail,
    stop,
    write_config,
)
from tests.helpers import chat_job
from workers.devstack.simulator import SimulatorServer

JOBS = size(3000, 10_000)
CONCURRENCY = 64
KILL_AT = (0.2, 0.45, 0.7)  # of the batch's results


async def test_three_sigkills_during_a_batch_lose_nothing_and_repeat_only_in_flight_calls(
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
        pipeline_runners=CONCURRENCY,  # jobs claimed ahead must not widen the repeat bound
        lease_s=3.0,
    )
    await create_topics(settings, load_config(settings.config))
    started = time.monotonic()
    async with HeadwayClient(settings) as client:
        await client.submit_many(chat_job(f"job-{i}", batch_id="kill") for i in range(JOBS))
    names = iter(f"{settings.topic_prefix}-w{n}" for n in range(10))
    workers = [
        (name, spawn_worker(settings, worker_id=name)) for name in (next(names), next(names))
    ]
    in_flight_at_kills: list[int] = []  # the victim's claimed, unfinished jobs (ledger)
    calls_in_flight_at_kills: list[int] = []  # all calls open at the simulator then
    try:
        for share in KILL_AT:
            await results(settings, int(JOBS * share))
            name, victim = workers.pop(0)  # the oldest: it holds work by now
            calls_in_flight_at_kills.append(simulator.stats.in_flight)
            await asyncio.to_thread(stop, victim, signal.SIGKILL)
            in_flight_at_kills.append(await running_jobs_of(settings, name))
            name = next(names)
            workers.append((name, spawn_worker(settings, worker_id=name)))
        collected = await results(settings, JOBS)
    finally:
        for _, process in workers:
            code = await asyncio.to_thread(stop, process, signal.SIGTERM)
            assert code == 0, stderr_tail(process)
    elapsed = time.monotonic() - started
    job_ids = {f"job-{i}" for i in range(JOBS)}
    copies = assert_one_result_each(collected, job_ids)
    calls = sum(simulator.stats.jobs.values())
    assert set(simulator.stats.jobs) == job_ids
    assert JOBS <= calls <= JOBS + sum(in_flight_at_kills), (calls, in_flight_at_kills)
    # in doubt at a kill: called, result not stored — at most CONCURRENCY per dead worker
    assert calls <= JOBS + len(KILL_AT) * CONCURRENCY, calls
    spend = await spend_matches_usage_events(settings, "demo", JOBS)
    figures(
        jobs=JOBS,
        kills=len(KILL_AT),
        distinct_results=len(collected.by_key),
        result_messages=copies,
        provider_calls=calls,
        in_flight_at_kills=in_flight_at_kills,
        provider_calls_open_at_kills=calls_in_flight_at_kills,
        repeated_calls=calls - JOBS,
        elapsed_s=round(elapsed, 1),
        **spend,
    )
