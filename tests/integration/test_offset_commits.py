"""Offsets are committed only up to each partition's first unfinished job, even when later jobs
finish first — so a crash can only ever cause redelivery, never a lost job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import TopicPartition

from broker.client import HeadwayClient
from broker.config import development_config
from broker.settings import Settings
from schemas.jobs import Priority
from tests.helpers import chat_job, committed, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer

FAST = 30


async def test_commits_stop_at_a_slow_job_until_it_finishes(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url, job_partitions=1)
    config = development_config(simulator.base_url)
    tp = TopicPartition(settings.topics.jobs(Priority.NORMAL), 0)
    slow = chat_job("slow", messages=[{"role": "user", "content": "sim:latency_ms=5000 slow"}])
    fast = [chat_job(f"fast-{i}") for i in range(FAST)]
    async with running_worker(settings, config), HeadwayClient(settings) as client:
        await client.submit_many([chat_job("first"), slow, *fast])  # offsets 0, 1, 2..31
        await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=FAST + 1
        )
        await asyncio.sleep(0.3)  # several commit intervals pass while "slow" is still running
        assert await committed(settings, tp) == 1  # offset 0 done; 1 ("slow") unfinished
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=FAST + 2
        )
        assert "slow" in results.by_key
        for _ in range(50):
            if await committed(settings, tp) == FAST + 2:
                break
            await asyncio.sleep(0.1)
        assert await committed(settings, tp) == FAST + 2
