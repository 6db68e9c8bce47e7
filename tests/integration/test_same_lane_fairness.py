"""Fair service when the log is not fair (issue 21): tenant B's few jobs queued behind tenant
A's backlog in the same lane and partitions run beside A's, not after them — with one worker
and with three; high-priority jobs pass a spilled low-priority backlog across three workers;
two heavy tenants share the workers by their weights; a cancelled batch's
spilled jobs end `cancelled` and `headway status --batch` counts them while they wait.

Bounded versions of `make bench` (f2): no wall-clock targets here, the orders of events that
the figures come from (how much of A's backlog was still waiting when B had finished)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.admin import create_topics
from broker.client import HeadwayClient
from broker.config import HeadwayConfig, parse_config
from broker.settings import Settings
from schemas.control import ControlCommand
from tests.helpers import chat_job, running_worker
from workers.devstack.simulator import SimulatorConfig, SimulatorServer
from workers.intake.backlog import batch_in_lanes
from workers.ledger.database.engine import create_engine
from workers.ledger.database.models import FairShareRow, JobRow
from workers.ledger.queries import batch_status
from workers.runtime.worker import Worker

pytestmark = pytest.mark.integration
# Three workers in the test process beside the rest of the suite: on Apache Kafka under a
# loaded CI machine their group kept rebalancing (heartbeats late) while B waited, which times
# the rebalances, not fairness. They run on the embedded broker; quiet, they pass on Apache
# Kafka too (`HEADWAY_TEST_KAFKA=apache pytest tests/integration/test_same_lane_fairness.py`),
# and `make bench` (f3), (f4) measure worker processes.
three_workers = pytest.mark.skipif(
    os.environ.get("HEADWAY_TEST_KAFKA", "tansu") == "apache"
    and os.environ.get("CI", "").lower() in ("1", "true", "yes"),
    reason="three in-process workers on Apache Kafka in a loaded CI run time rebalances",
)

BACKLOG = 20_000
SMALL = 20


def fairness_config(simulator_url: str, **weights: float) -> HeadwayConfig:
    return parse_config(
        {
            "providers": {"sim": {"type": "simulator", "base_url": simulator_url}},
            "routes": {
                "summarize": {"kind": "chat", "deployments": [{"provider": "sim", "model": "m"}]}
            },
            "tenants": {name: {"weight": weight} for name, weight in weights.items()},
        }
    )


def jobs_of(
    tenant: str, count: int, batch: str, priority: str = "normal"
) -> Iterator[dict[str, Any]]:
    for i in range(count):
        yield chat_job(f"{batch}-{i}", tenant=tenant, batch_id=batch, priority=priority)


async def publish(settings: Settings, config: HeadwayConfig, jobs: Iterator[Any]) -> None:
    await create_topics(settings, config)
    async with HeadwayClient(settings) as client:
        chunk: list[dict[str, Any]] = []
        for job in jobs:
            chunk.append(job)
            if len(chunk) == 5000:
                await client.submit_many(chunk)
                chunk.clear()
        await client.submit_many(chunk)


async def finished(database_url: str, batch: str) -> int:
    engine = create_engine(database_url)
    try:
        status = await batch_status(engine, batch)
    finally:
        await engine.dispose()
    return status.finished


@contextlib.asynccontextmanager
async def workers(settings: Settings, config: HeadwayConfig, count: int) -> AsyncIterator[Any]:
    async with contextlib.AsyncExitStack() as stack:
        started = [
            await stack.enter_async_context(running_worker(settings, config)) for _ in range(count)
        ]
        yield started


async def until_group_settled(started: list[Worker], steady_s: float = 1.0) -> None:
    """Until every worker holds partitions and no assignment has changed for ``steady_s``."""
    last: list[frozenset[Any]] = []
    steady_since = asyncio.get_running_loop().time()
    for _ in range(1200):
        now = [frozenset(worker.assignment()) for worker in started]
        if now != last:
            last, steady_since = now, asyncio.get_running_loop().time()
        elif all(now) and asyncio.get_running_loop().time() - steady_since >= steady_s:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the group never settled: {last}")


async def small_tenant_behind_backlog(
    settings: Settings,
    simulator_url: str,
    count: int,
    *,
    backlog_priority: str = "normal",
    small_priority: str = "normal",
) -> None:
    config = fairness_config(simulator_url, a=1.0, b=1.0)
    backlog = jobs_of("a", BACKLOG, "backlog", backlog_priority)
    await publish(settings, config, backlog)  # before any worker runs
    url = settings.database_url
    async with workers(settings, config, count) as started:
        await until_group_settled(started)  # B is not published into a rebalance
        for _ in range(600):  # A's backlog is running, on every worker
            if all(worker.processed >= 50 for worker in started):
                break
            await asyncio.sleep(0.05)
        a_before = await finished(url, "backlog")
        await publish(settings, config, jobs_of("b", SMALL, "small", small_priority))
        for _ in range(1200):
            if await finished(url, "small") >= SMALL:
                break
            await asyncio.sleep(0.05)
        a_during = await finished(url, "backlog") - a_before
        assert await finished(url, "small") == SMALL
        spilled = sum(worker.spill.stored for worker in started if worker.spill is not None)
    # B did not wait for A's backlog: fewer than a quarter of it ran while B's jobs waited
    # (before spilling, 96 % of it did), because what did not fit the buffers waited in the
    # ledger instead of ahead of B in Kafka. (Quiet, a tenth is plenty: make bench (f3); a
    # quarter leaves room for a loaded CI machine, where three workers run beside other tests.)
    assert a_during < BACKLOG // 4, a_during
    assert spilled >= BACKLOG // 2


async def test_a_small_tenant_is_served_beside_a_backlog_ahead_of_it_in_its_lane(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    async with SimulatorServer(SimulatorConfig(seed=1, latency_ms=200)) as simulator:
        settings = make_settings(database_url=sqlite_url, concurrency=64)
        await small_tenant_behind_backlog(settings, simulator.base_url, 1)


@three_workers
async def test_with_three_workers_on_postgresql_too(
    make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    async with SimulatorServer(SimulatorConfig(seed=2, latency_ms=200)) as simulator:
        settings = make_settings(database_url=postgres_url, concurrency=32)
        await small_tenant_behind_backlog(settings, simulator.base_url, 3)


@three_workers
async def test_priority_holds_across_three_workers_with_a_spilled_backlog(
    make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    async with SimulatorServer(SimulatorConfig(seed=5, latency_ms=200)) as simulator:
        settings = make_settings(database_url=postgres_url, concurrency=32)
        await small_tenant_behind_backlog(
            settings, simulator.base_url, 3, backlog_priority="low", small_priority="high"
        )


async def succeeded_by_tenant(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(JobRow.tenant, func.count())
                .where(JobRow.status == "succeeded")
                .group_by(JobRow.tenant)
            )
            return {tenant: int(count) for tenant, count in rows}
    finally:
        await engine.dispose()


@three_workers
async def test_two_heavy_tenants_share_three_workers_by_their_weights(
    make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    async with SimulatorServer(SimulatorConfig(seed=3, latency_ms=100)) as simulator:
        config = fairness_config(simulator.base_url, heavy=3.0, light=1.0)
        settings = make_settings(database_url=postgres_url, concurrency=16, buffer_max_jobs=96)

        def interleaved() -> Iterator[dict[str, Any]]:
            for heavy, light in zip(
                jobs_of("heavy", 6000, "h"), jobs_of("light", 6000, "l"), strict=True
            ):
                yield heavy
                yield light

        await publish(settings, config, interleaved())
        async with workers(settings, config, 3):
            # the backlogs wait in the ledger (what the workers had not read could not be
            # served by weight), then three workers serve them
            await wait_until_in_ledger(postgres_url, 12_000 - 3 * 2 * 32)
            before = await succeeded_by_tenant(postgres_url)
            after = await wait_until_done(postgres_url, sum(before.values()) + 3000)
    heavy = after["heavy"] - before.get("heavy", 0)
    light = after["light"] - before.get("light", 0)
    assert heavy / light == pytest.approx(3.0, rel=0.1), (before, after)


async def wait_until_in_ledger(database_url: str, total: int) -> None:
    """Until the ledger holds ``total`` jobs: spilled and waiting, or claimed."""
    engine = create_engine(database_url)
    try:
        for _ in range(1200):
            async with engine.connect() as conn:
                waiting = await conn.scalar(select(func.sum(FairShareRow.waiting)))
                rows = await conn.scalar(select(func.count()).select_from(JobRow))
            if int(waiting or 0) + int(rows or 0) >= total:
                return
            await asyncio.sleep(0.05)
    finally:
        await engine.dispose()
    raise AssertionError("the backlogs never reached the ledger")


async def wait_until_done(database_url: str, total: int) -> dict[str, int]:
    for _ in range(1200):
        done = await succeeded_by_tenant(database_url)
        if sum(done.values()) >= total:
            return done
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {total} jobs finished: {done}")


async def test_spilled_jobs_of_a_cancelled_batch_are_counted_then_end_cancelled(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    async with SimulatorServer(SimulatorConfig(seed=4, latency_ms=200)) as simulator:
        config = fairness_config(simulator.base_url, a=1.0)
        settings = make_settings(database_url=sqlite_url, concurrency=16, buffer_max_jobs=96)
        await publish(settings, config, jobs_of("a", 3000, "doomed"))
        engine = create_engine(sqlite_url)
        try:
            async with running_worker(settings, config) as worker:
                spill = worker.spill
                assert spill is not None
                for _ in range(600):
                    if spill.stored >= 2500:
                        break
                    await asyncio.sleep(0.05)
                waiting = await batch_status(engine, "doomed")
                assert waiting.queued >= 2500 - waiting.finished
                # with the lanes read: every job once — spilled, buffered, running or finished
                in_lanes = (await batch_in_lanes(settings, "doomed")).jobs
                exact = await batch_status(engine, "doomed", in_lanes=in_lanes)
                assert exact.total == 3000, exact
                async with HeadwayClient(settings) as client:
                    await client.cancel(
                        ControlCommand(action="cancel", tenant="a", batch_id="doomed")
                    )
                await until_cancel_known(worker)
                started = (await batch_status(engine, "doomed")).total + concurrency_of(worker)
                for _ in range(1200):
                    status = await batch_status(engine, "doomed")
                    if status.finished >= 3000:
                        break
                    await asyncio.sleep(0.05)
        finally:
            await engine.dispose()
    assert status.finished == 3000
    assert status.queued == 0
    # jobs that had not started when the cancel was known never reached the provider
    assert status.by_status.get("succeeded", 0) <= started
    assert status.by_status["cancelled"] >= 3000 - started


def concurrency_of(worker: Worker) -> int:
    return worker.settings.concurrency + worker.settings.runners_ahead


async def until_cancel_known(worker: Worker) -> None:
    for _ in range(400):
        if worker.cancellations.is_cancelled("a", "x", "doomed"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the cancel never reached the worker")
