"""Provider limits over the real broker and real HTTP: rpm pacing, Retry-After pausing one
deployment (its jobs parked on the retry topic) while the others go on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from broker.client import HeadwayClient
from broker.config import HeadwayConfig, parse_config
from broker.settings import Settings
from tests.helpers import chat_job, eventually, read_topic, running_worker
from workers.devstack.simulator import SimulatorConfig, SimulatorServer
from workers.ledger.writer import LedgerWriter

pytestmark = pytest.mark.integration


def config(routes: dict[str, tuple[str, dict[str, Any]]]) -> HeadwayConfig:
    """One provider and one single-deployment route per entry: route → (base_url, limits)."""
    return parse_config(
        {
            "providers": {
                name: {"type": "openai_compatible", "base_url": url}
                for name, (url, _) in routes.items()
            },
            "routes": {
                name: {
                    "kind": "chat",
                    "deployments": [{"provider": name, "model": f"{name}-model", **limits}],
                }
                for name, (_, limits) in routes.items()
            },
            "tenants": {"demo": {}},
        }
    )


async def test_a_deployment_rpm_paces_calls_so_the_provider_never_answers_429(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    jobs = 12
    async with SimulatorServer(SimulatorConfig(rpm=120)) as sim:
        settings = make_settings(database_url=sqlite_url, concurrency=16)
        cfg = config({"paced": (sim.base_url, {"rpm": 120})})
        async with running_worker(settings, cfg), HeadwayClient(settings) as client:
            started = time.monotonic()
            await client.submit_many([chat_job(f"p-{i}", route="paced") for i in range(jobs)])
            results = await read_topic(
                settings.kafka_bootstrap or "", settings.topics.results, until_keys=jobs
            )
            elapsed = time.monotonic() - started
    assert all(c[0]["status"] == "succeeded" for c in results.by_key.values())
    assert sim.stats.rate_limited == 0
    assert sim.stats.chat_calls == jobs
    # 2 a second (a one-second burst of 2, then 1.96/s): 12 calls need about 5 s
    assert elapsed >= 4.0, elapsed


async def test_retry_after_pauses_only_the_deployment_that_asked(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    async with (
        SimulatorServer(SimulatorConfig(rpm=1)) as strict,
        SimulatorServer(SimulatorConfig(latency_ms=10)) as free,
    ):
        settings = make_settings(database_url=sqlite_url, concurrency=8)
        cfg = config({"strict": (strict.base_url, {}), "free": (free.base_url, {})})
        free_jobs = [chat_job(f"f-{i}", route="free") for i in range(30)]
        bootstrap = settings.kafka_bootstrap or ""
        async with running_worker(settings, cfg), HeadwayClient(settings) as client:
            await client.submit(chat_job("s-0", route="strict"))  # the minute's one call
            await read_topic(bootstrap, settings.topics.results, until_keys=1)
            await client.submit(chat_job("s-1", route="strict"))  # 429, Retry-After ≈ 60 s
            await read_topic(bootstrap, settings.topics.retry, until_keys=1)  # parked
            started = time.monotonic()
            await client.submit_many([chat_job("s-2", route="strict"), *free_jobs])
            results = await read_topic(bootstrap, settings.topics.results, until_keys=31)
            free_elapsed = time.monotonic() - started
            parked = await read_topic(bootstrap, settings.topics.retry, until_keys=2)

    assert sorted(results.by_key) == sorted(["s-0", *(f"f-{i}" for i in range(30))])
    assert {copies[0]["status"] for copies in results.by_key.values()} == {"succeeded"}
    assert free_elapsed < 10
    # s-1 and s-2 wait on the retry topic for the strict deployment's Retry-After…
    assert set(parked.by_key) == {"s-1", "s-2"}
    # …and s-2 made no call: the deployment is paused until its Retry-After has passed
    assert strict.stats.calls == 2 and strict.stats.rate_limited == 1


async def test_a_fresh_deployments_ramp_admits_the_first_wave_without_waiting_for_an_answer(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    """Before its first outcome a deployment takes N calls, doubling every 20 ms; calls it
    refused try again as the cap grows, not a whole provider latency later."""
    jobs = 200
    async with SimulatorServer(SimulatorConfig(latency_ms=1500)) as sim:
        settings = make_settings(database_url=sqlite_url, concurrency=jobs)
        cfg = config({"slow": (sim.base_url, {})})
        async with running_worker(settings, cfg), HeadwayClient(settings) as client:
            await client.submit_many([chat_job(f"w-{i}", route="slow") for i in range(jobs)])
            assert await eventually(lambda: sim.stats.in_flight > 0)  # the first call
            first_call = time.monotonic()
            most = 0
            while time.monotonic() - first_call < 0.6:  # well before the first answer (1.5 s)
                most = max(most, sim.stats.in_flight)
                await asyncio.sleep(0.005)
            results = await read_topic(
                settings.kafka_bootstrap or "", settings.topics.results, until_keys=jobs
            )
    assert most == jobs, most
    assert all(c[0]["status"] == "succeeded" for c in results.by_key.values())


async def test_jobs_claimed_ahead_wait_for_a_slot_so_at_most_concurrency_calls_are_in_doubt(
    make_settings: Callable[..., Settings], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job is in doubt from its call until its result is stored (a crash would repeat the
    call). Extra pipeline runners prepare jobs ahead, but never add to that number — even when
    storing is slow."""
    concurrency, jobs = 8, 80
    finishing = 0
    original = LedgerWriter.finish

    async def slow_finish(self: LedgerWriter, record: Any) -> Any:
        nonlocal finishing
        finishing += 1
        try:
            await asyncio.sleep(0.1)  # a slow database
            return await original(self, record)
        finally:
            finishing -= 1

    monkeypatch.setattr(LedgerWriter, "finish", slow_finish)
    async with SimulatorServer(SimulatorConfig(latency_ms=50)) as sim:
        settings = make_settings(
            database_url=sqlite_url, concurrency=concurrency, pipeline_runners=3 * concurrency
        )
        cfg = config({"p": (sim.base_url, {})})
        most = 0

        async def sample() -> None:
            nonlocal most
            while True:
                most = max(most, sim.stats.in_flight + finishing)
                await asyncio.sleep(0.002)

        async with running_worker(settings, cfg), HeadwayClient(settings) as client:
            sampler = asyncio.create_task(sample())
            await client.submit_many([chat_job(f"d-{i}", route="p") for i in range(jobs)])
            results = await read_topic(
                settings.kafka_bootstrap or "", settings.topics.results, until_keys=jobs
            )
            sampler.cancel()
    assert all(c[0]["status"] == "succeeded" for c in results.by_key.values())
    assert sim.stats.chat_calls == jobs
    assert 0 < most <= concurrency, most
