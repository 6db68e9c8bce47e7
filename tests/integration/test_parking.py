"""Non-blocking retries: a job that must wait long is parked on the retry topic and comes back
when its time has come — over the real broker, real HTTP and a real ledger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from broker.client import HeadwayClient
from broker.config import parse_config
from broker.settings import Settings
from broker.topics import HEADER_ATTEMPTS, HEADER_NOT_BEFORE, HEADER_RETRY_COUNT
from tests.helpers import chat_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorConfig, SimulatorServer

pytestmark = pytest.mark.integration


async def test_jobs_facing_an_open_circuit_are_parked_and_succeed_when_it_recovers(
    make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    jobs = 12
    async with SimulatorServer(SimulatorConfig(error_rate=1.0)) as sim:
        settings = make_settings(
            database_url=postgres_url,
            concurrency=8,
            circuit_failures=2,
            circuit_open_s=1.5,
            retry_park_after_s=0.5,
        )
        config = parse_config(
            {
                "providers": {"only": {"type": "openai_compatible", "base_url": sim.base_url}},
                "routes": {
                    "summarize": {
                        "kind": "chat",
                        "deployments": [{"provider": "only", "model": "m"}],
                    }
                },
                "tenants": {"demo": {}},
            }
        )
        bootstrap = settings.kafka_bootstrap or ""
        async with running_worker(settings, config), HeadwayClient(settings) as client:
            await client.submit_many(chat_job(f"p-{i}") for i in range(jobs))
            parked = await read_topic(bootstrap, settings.topics.retry, until_keys=jobs)
            sim.config.error_rate = 0.0  # the provider recovers while the jobs are parked
            started = time.monotonic()
            results = await read_topic(bootstrap, settings.topics.results, until_keys=jobs)
            waited = time.monotonic() - started
            await asyncio.sleep(0.2)

    # every job was parked (not slept on), with the time it may run again
    assert len(parked.records) >= jobs
    for record in parked.records:
        headers = dict(record.headers)
        assert int(headers[HEADER_RETRY_COUNT]) >= 1
        assert int(headers[HEADER_NOT_BEFORE]) > 0
        assert HEADER_ATTEMPTS in headers
    served = [copies[0] for copies in results.by_key.values()]
    assert len(served) == jobs
    assert {r["status"] for r in served} == {"succeeded"}
    # the provider calls made before parking are counted too
    assert sum(r["attempts"] for r in served) == sim.stats.calls
    assert sim.stats.chat_calls == jobs
    assert waited < 10


async def test_a_parked_job_that_keeps_failing_ends_failed_after_the_last_park(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    async with SimulatorServer(SimulatorConfig(error_rate=1.0)) as sim:
        settings = make_settings(
            database_url=sqlite_url,
            circuit_failures=1,
            circuit_open_s=0.6,
            retry_park_after_s=0.2,
            retry_max_parks=2,
        )
        config = parse_config(
            {
                "providers": {"only": {"type": "openai_compatible", "base_url": sim.base_url}},
                "routes": {
                    "summarize": {
                        "kind": "chat",
                        "deployments": [{"provider": "only", "model": "m"}],
                    }
                },
                "tenants": {"demo": {}},
            }
        )
        async with running_worker(settings, config), HeadwayClient(settings) as client:
            await client.submit(chat_job("doomed"))
            results = await read_topic(
                settings.kafka_bootstrap or "", settings.topics.results, until_keys=1, timeout_s=30
            )
    result = results.by_key["doomed"][0]
    assert result["status"] == "failed"
    assert result["error"]["code"] == "provider_error"
    assert result["attempts"] == sim.stats.calls >= 2
