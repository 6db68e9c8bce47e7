"""A provider call far longer than max.poll.interval.ms does not cost the worker its
partitions: the fetch loop never waits on a job, so the group stays stable and the job
completes once."""

from __future__ import annotations

from collections.abc import Callable

from broker.client import HeadwayClient
from broker.config import development_config
from broker.settings import Settings
from tests.chaos.conftest import size
from tests.helpers import chat_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer

CALL_MS = size(6_000, 30_000)
POLL_INTERVAL_MS = size(3000, 7000)


async def test_a_call_longer_than_the_poll_interval_causes_no_rebalance(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    figures: Callable[..., None],
) -> None:
    settings = make_settings(
        database_url=sqlite_url, session_timeout_ms=6000, max_poll_interval_ms=POLL_INTERVAL_MS
    )
    config = development_config(simulator.base_url)
    slow = chat_job("slow", messages=[{"role": "user", "content": f"sim:latency_ms={CALL_MS} x"}])
    async with running_worker(settings, config) as worker, HeadwayClient(settings) as client:
        await client.submit_many([slow, *(chat_job(f"quick-{i}") for i in range(20))])
        results = await read_topic(
            settings.kafka_bootstrap or "",
            settings.topics.results,
            until_keys=21,
            timeout_s=CALL_MS / 1000 + 60,
        )
        assert worker.revocations == 0
    assert results.by_key["slow"][0]["status"] == "succeeded"
    assert len(results.by_key["slow"]) == 1
    assert simulator.stats.jobs["slow"] == 1
    figures(
        call_s=CALL_MS / 1000,
        max_poll_interval_s=POLL_INTERVAL_MS / 1000,
        revocations=worker.revocations,
        slow_job_calls=simulator.stats.jobs["slow"],
        results_of_slow_job=len(results.by_key["slow"]),
    )
