"""`headway status --batch` counts a batch's queued jobs wherever they wait: not read from the
lanes yet, buffered by a worker, or spilled to the ledger — each job once, started or not."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer

from broker.admin import create_topics
from broker.client import HeadwayClient
from broker.config import BudgetPeriod, OnBudgetExhausted, development_config
from broker.settings import Settings
from schemas.jobs import Priority
from tests.helpers import chat_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer
from workers.intake.backlog import batch_in_lanes
from workers.ledger.database.engine import create_engine
from workers.ledger.queries import BatchStatus, batch_status

pytestmark = pytest.mark.integration


async def counted(settings: Settings, batch: str, tenant: str | None = None) -> BatchStatus:
    found = await batch_in_lanes(settings, batch, tenant)
    assert found.complete
    engine = create_engine(settings.database_url)
    try:
        return await batch_status(engine, batch, tenant, found.jobs)
    finally:
        await engine.dispose()


async def test_jobs_not_read_yet_are_counted_queued_by_batch_and_tenant(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    settings = make_settings(database_url=sqlite_url)
    await create_topics(settings, development_config("http://127.0.0.1:9"))
    async with HeadwayClient(settings) as client:
        await client.submit_many([chat_job(f"q-{i}", batch_id="q") for i in range(30)])
        await client.submit_many([chat_job(f"x-{i}", batch_id="other") for i in range(10)])
        await client.submit_many(
            [chat_job(f"t-{i}", batch_id="q", tenant="team-b") for i in range(5)]
        )
        await client.submit_many([chat_job("q-0", batch_id="q")])  # a duplicate: one job
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:  # records that name no job are never counted
        for value in (b"\xff\xfe", b'{"batch_id": "q"}', b'{"job_id": "q-99", "batch_id": "q"}'):
            await producer.send_and_wait(settings.topics.jobs(Priority.NORMAL), value)
    finally:
        await producer.stop()

    every = await counted(settings, "q")
    assert (every.in_lanes, every.total, every.finished) == (35, 35, 0)
    assert (await counted(settings, "q", tenant="demo")).in_lanes == 30
    assert (await counted(settings, "other")).in_lanes == 10


async def test_a_read_stops_at_its_limit_and_says_so(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    settings = make_settings(database_url=sqlite_url)
    await create_topics(settings, development_config("http://127.0.0.1:9"))
    async with HeadwayClient(settings) as client:
        await client.submit_many([chat_job(f"q-{i}", batch_id="q") for i in range(30)])
    found = await batch_in_lanes(settings, "q", max_records=10)
    assert (found.complete, found.records, len(found.jobs)) == (False, 10, 10)


async def test_finished_jobs_are_not_counted_again_from_the_lanes(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url)
    config = development_config(simulator.base_url)
    async with running_worker(settings, config), HeadwayClient(settings) as client:
        await client.submit_many([chat_job(f"q-{i}", batch_id="q") for i in range(40)])
        for _ in range(600):
            status = await counted(settings, "q")
            assert status.total == 40  # at every moment: each job once, wherever it is
            if status.finished == 40:
                break
    assert (status.in_lanes, status.queued, status.by_status) == (0, 0, {"succeeded": 40})


async def test_jobs_parked_before_they_started_are_counted_queued(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url)
    config = development_config(simulator.base_url)
    broke = config.tenants["demo"].model_copy(
        update={
            "budget_usd": 0.0,
            "budget_period": BudgetPeriod.DAY,
            "on_budget_exhausted": OnBudgetExhausted.DEFER,
        }
    )
    config = config.model_copy(update={"tenants": {**config.tenants, "demo": broke}})
    async with running_worker(settings, config), HeadwayClient(settings) as client:
        await client.submit_many([chat_job(f"q-{i}", batch_id="q") for i in range(10)])
        parked = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.retry, until_keys=10
        )
        assert parked.distinct() == 10  # deferred on the retry topic, none started
        status = await counted(settings, "q")
    assert (status.in_lanes, status.total, status.by_status) == (10, 10, {})
