"""Cancellation: a cancel command on the control topic reaches the ledger for every worker, and
jobs of a cancelled batch that have not started end `cancelled` without a provider call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from broker.admin import create_topics
from broker.client import HeadwayClient
from broker.config import TenantConfig, development_config
from broker.settings import Settings
from schemas.control import ControlCommand
from tests.helpers import chat_job, read_topic, running_worker
from tests.hostile.producer import RawName, hostile_producer, send_all
from workers.devstack.simulator import SimulatorServer
from workers.ledger.database.engine import create_engine
from workers.ledger.database.transactions import AsyncTransactions
from workers.pipeline.cancellations import Cancellations


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


SECRET_ENV = "HEADWAY_TEST_CANCEL_SECRET"


async def test_hostile_control_records_never_stop_the_follower_and_signed_cancels_are_required(
    make_settings: Callable[..., Settings],
    database_url: str,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, "acme-secret")
    settings = make_settings(database_url=database_url)
    base = development_config(simulator.base_url)
    acme = TenantConfig(signing_secret_env=SECRET_ENV, require_signed_cancels=True)
    config = base.model_copy(update={"tenants": {**base.tenants, "acme": acme}})
    control = settings.topics.control
    nul = b'{"action": "cancel", "tenant": "x\\u0000", "batch_id": "b"}'
    async with running_worker(settings, config) as worker:
        async with hostile_producer(settings.kafka_bootstrap or "") as producer:
            await send_all(
                producer,
                control,
                [
                    (b"x", nul, []),  # a NUL tenant once pinned the follower on PostgreSQL
                    (b"x", b"\xffnot json", [(RawName(b"\xff\xfe"), b"v")]),  # undecodable
                    (b"x", b'{"action": "cancel"}', [("k", None)]),
                ],
            )
        async with HeadwayClient(settings) as anyone:  # unsigned
            await anyone.cancel(ControlCommand(action="cancel", tenant="acme", batch_id="u"))
            await anyone.cancel(ControlCommand(action="cancel", tenant="demo", batch_id="d"))
        async with HeadwayClient(settings, signing_secret="acme-secret") as signed:
            await signed.cancel(ControlCommand(action="cancel", tenant="acme", batch_id="s"))
        cancels = worker.cancellations
        for _ in range(600):  # up to 30 s on a loaded machine
            if cancels.is_cancelled("acme", "j", "s") and cancels.is_cancelled("demo", "j", "d"):
                break
            await asyncio.sleep(0.05)
        await cancels.refresh()
        assert cancels.is_cancelled("acme", "j", "s")  # signed: applied
        assert cancels.is_cancelled("demo", "j", "d")  # a tenant that does not ask: applied
        assert not cancels.is_cancelled("acme", "j", "u")  # unsigned for acme: ignored
