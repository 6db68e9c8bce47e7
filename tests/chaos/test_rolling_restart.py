"""A rolling restart during a backfill: three `headway worker` processes on PostgreSQL, each in
turn stopped with SIGTERM and replaced, the next only once the group has three members again.
No job is called twice, and the results never stop for longer than one rebalance takes.
Apache Kafka only (`make test`'s Apache tier, three brokers): the classic consumer-group
protocol with its real timings. On Tansu one bounded run stalled 11.9 s, past the bound (its
group coordinator's rebalance timing, not headway's), while others took 3.3 s."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

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
from tests.chaos.progress import watching
from tests.helpers import chat_job
from workers.devstack.simulator import SimulatorServer

pytestmark = pytest.mark.apache

JOBS = size(3000, 10_000)
WORKERS = 3
CONCURRENCY = 32
RESTART_AT = (0.2, 0.4, 0.6)  # of the results


async def group_members(settings: Settings) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([settings.consumer_group])
        [(error, _, state, _, _, members, *_)] = response.groups
        return len(members) if error == 0 and state == "Stable" else 0
    except KafkaError:  # no coordinator for the group yet
        return 0
    finally:
        await admin.close()


async def until_members(settings: Settings, count: int, timeout_s: float = 60) -> float:
    """Wait until the group is stable with ``count`` members; return how long it took."""
    started = time.monotonic()
    while await group_members(settings) != count:
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"the group did not reach {count} members in {timeout_s} s")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def test_a_rolling_restart_calls_no_job_twice_and_stalls_no_longer_than_a_rebalance(
    make_settings: Callable[..., Settings],
    postgres_url: str,
    simulator: SimulatorServer,
    tmp_path: Path,
    figures: Callable[..., None],
) -> None:
    simulator.config.latency_ms = 50
    settings = make_settings(
        database_url=postgres_url,
        config=write_config(tmp_path, simulator),
        concurrency=CONCURRENCY,
        job_partitions=6,
    )
    await create_topics(settings, load_config(settings.config))
    async with HeadwayClient(settings) as client:
        await client.submit_many(chat_job(f"job-{i}", batch_id="roll") for i in range(JOBS))
    workers = [spawn_worker(settings, worker_id=f"w{n}") for n in range(WORKERS)]
    rejoined_s: list[float] = []
    try:
        async with watching(settings.kafka_bootstrap or "", settings.topics.results) as progress:
            await until_members(settings, WORKERS)
            for n, share in enumerate(RESTART_AT):
                await progress.reached(int(JOBS * share))
                oldest = workers.pop(0)
                code = await asyncio.to_thread(stop, oldest, signal.SIGTERM)
                assert code == 0, stderr_tail(oldest)
                workers.append(spawn_worker(settings, worker_id=f"w{WORKERS + n}"))
                rejoined_s.append(round(await until_members(settings, WORKERS), 1))
            await progress.reached(JOBS)
            longest_gap = progress.longest_gap_s()
    finally:
        for process in workers:
            code = await asyncio.to_thread(stop, process, signal.SIGTERM)
            assert code == 0, stderr_tail(process)
    collected = await results(settings, JOBS)
    copies = assert_one_result_each(collected, {f"job-{i}" for i in range(JOBS)})
    calls = sum(simulator.stats.jobs.values())
    assert max(simulator.stats.jobs.values()) == 1 and calls == JOBS, calls
    # one rebalance: the leaver's in-flight jobs drain (revoke grace), the rest rejoin
    bound = settings.revoke_grace_s + settings.session_timeout_ms / 1000
    assert longest_gap < bound, (longest_gap, bound)
    figures(
        jobs=JOBS,
        restarts=len(RESTART_AT),
        provider_calls=calls,
        result_messages=copies,
        longest_without_progress_s=round(longest_gap, 2),
        stall_bound_s=bound,
        group_stable_again_after_s=rejoined_s,
    )
