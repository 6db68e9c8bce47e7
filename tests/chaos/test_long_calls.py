"""A provider call far longer than max.poll.interval.ms does not cost the worker its
partitions: the fetch loop never waits on a job, so the group stays stable and the job
completes once."""

from __future__ import annotations

from collections.abc import Callable

from broker.client import HeadwayClient
from broker.config import development_config
from broker.settings import Settings
from tests.helpers import chat_job, read_topic, running_worker
from workers.simulator import SimulatorServer


async def test_a_call_longer_than_the_poll_interval_causes_no_rebalance(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(
        database_url=sqlite_url, session_timeout_ms=6000, max_poll_interval_ms=7000
    )
    config = development_config(simulator.base_url)
    slow = chat_job("slow", messages=[{"role": "user", "content": "sim:latency_ms=12000 x"}])
    async with running_worker(settings, config) as worker, HeadwayClient(settings) as client:
        await client.submit_many([slow, *(chat_job(f"quick-{i}") for i in range(20))])
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=21, timeout_s=60
        )
        assert worker.revocations == 0
    assert results.by_key["slow"][0]["status"] == "succeeded"
    assert len(results.by_key["slow"]) == 1
    assert simulator.stats.jobs["slow"] == 1
