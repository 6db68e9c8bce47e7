"""Cancellation: a cancel command on the control topic reaches the ledger for every worker, and
jobs of a cancelled batch that have not started end `cancelled` without a provider call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from broker.admin import create_topics
from broker.client import HeadwayClient
from broker.config import development_config
from broker.settings import Settings
from schemas.control import ControlCommand
from tests.helpers import chat_job, read_topic, running_worker
from workers.cancellations import Cancellations
from workers.ledger.db import create_engine
from workers.ledger.transactions import AsyncTransactions
from workers.simulator import SimulatorServer


async def test_a_cancel_on_the_control_topic_is_stored_for_every_worker(
    make_settings: Callable[..., Settings], database_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=database_url)
    engine = create_engine(database_url)
    elsewhere = Cancellations(AsyncTransactions(engine).run)  # as another worker would see
    try:
        async with (
            running_worker(settings, development_config(simulator.base_url)),
            HeadwayClient(settings) as client,
        ):
            await client.cancel(ControlCommand(action="cancel", tenant="demo", batch_id="b-9"))
            await client.cancel(ControlCommand(action="cancel", tenant="demo", job_id="j-1"))
            for _ in range(200):
                await elsewhere.refresh()
                if elsewhere.is_cancelled("demo", "j-1", None):
                    break
                await asyncio.sleep(0.1)
        assert elsewhere.is_cancelled("demo", "any-job", "b-9")
        assert elsewhere.is_cancelled("demo", "j-1", None)
        assert not elsewhere.is_cancelled("other-tenant", "j-1", "b-9")
    finally:
        await engine.dispose()


async def test_queued_jobs_of_a_cancelled_batch_end_cancelled_without_a_call(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url)
    engine = create_engine(sqlite_url)
    try:  # the cancel was stored (by any worker) while the jobs waited in Kafka
        await Cancellations(AsyncTransactions(engine).run).record(
            ControlCommand(action="cancel", tenant="demo", batch_id="drop")
        )
    finally:
        await engine.dispose()
    jobs = [chat_job(f"d-{i}", batch_id="drop") for i in range(10)]
    jobs += [chat_job(f"k-{i}", batch_id="keep") for i in range(5)]
    await create_topics(settings)  # the jobs wait in Kafka before any worker runs
    async with HeadwayClient(settings) as client:
        await client.submit_many(jobs)
    async with running_worker(settings, development_config(simulator.base_url)) as worker:
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=15
        )
        await worker.cancellations.refresh()
        # all of a SQLite worker's ledger work, cancellations too, runs on the ledger's
        # thread: its async engine never opened a second connection to the file
        pool = worker.ledger.engine.pool
        assert (pool.checkedin(), pool.checkedout()) == (0, 0)  # type: ignore[attr-defined]
    outcome = {key: copies[0] for key, copies in results.by_key.items()}
    for i in range(10):
        assert outcome[f"d-{i}"]["status"] == "cancelled"
        assert outcome[f"d-{i}"]["error"]["code"] == "cancelled"
    assert {outcome[f"k-{i}"]["status"] for i in range(5)} == {"succeeded"}
    assert simulator.stats.calls == 5
