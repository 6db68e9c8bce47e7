"""A FastStream application on the real broker: it submits jobs through headway's typed
publishers, a worker runs them, and its results handler receives the JobResults of its batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from faststream.kafka import KafkaBroker

from broker.config import development_config
from broker.faststream import HeadwayFastStream
from broker.settings import Settings
from schemas.results import JobResult
from tests.helpers import chat_job, running_worker
from workers.devstack.simulator import SimulatorServer

pytestmark = pytest.mark.integration


async def test_a_faststream_app_submits_jobs_and_handles_its_batchs_results(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url)
    kafka = KafkaBroker(settings.kafka_bootstrap or "")
    headway = HeadwayFastStream(kafka, settings.topics)
    handled: list[JobResult] = []
    all_ten = asyncio.Event()

    @headway.results(group=f"{settings.topic_prefix}-app", batch="mine", tenant="demo")
    async def on_result(result: JobResult) -> None:
        handled.append(result)
        if len(handled) >= 10:
            all_ten.set()

    async with running_worker(settings, development_config(simulator.base_url)), kafka:
        await kafka.start()
        for i in range(10):
            await headway.submit(chat_job(f"mine-{i}", batch_id="mine"))
        for i in range(3):
            await headway.submit(chat_job(f"theirs-{i}", batch_id="theirs"))
        async with asyncio.timeout(60):
            await all_ten.wait()
    assert sorted(r.job_id for r in handled) == sorted(f"mine-{i}" for i in range(10))
    assert {r.status.value for r in handled} == {"succeeded"}
