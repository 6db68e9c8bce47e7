"""The provider Batch-API lane end to end, over the real broker, real HTTP to the simulator's
batch endpoints and a real ledger: deadline-tolerant jobs are served by provider batch
submissions at half the online price, one result each on the usual topics; items the provider
does not finish go back online and still finish; everything else runs online as before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.client import HeadwayClient
from broker.config import HeadwayConfig, parse_config
from broker.settings import Settings
from schemas.control import ControlCommand
from tests.helpers import chat_job, eventually, read_topic, running_worker
from workers.batch_lane.lane import BatchLaneSettings
from workers.devstack.simulator import SimulatorConfig, SimulatorServer
from workers.ledger.database.engine import create_engine
from workers.ledger.database.models import BudgetHoldRow, BudgetRow
from workers.ledger.queries import batch_status, tenant_spend_usd

ONLINE_IN, ONLINE_OUT = 2.0, 8.0  # USD per million tokens, online; the batch price is half


def lane_config(sim: SimulatorServer, provider: str = "simulator") -> HeadwayConfig:
    base = sim.base_url if provider == "simulator" else sim.root_url
    deployment = {
        "provider": "p",
        "model": "chat-model",
        "input_usd_per_mtok": ONLINE_IN,
        "output_usd_per_mtok": ONLINE_OUT,
        "batch": True,
    }
    return parse_config(
        {
            "providers": {"p": {"type": provider, "base_url": base}},
            "routes": {"summarize": {"kind": "chat", "deployments": [deployment]}},
            "tenants": {"demo": {}},
        }
    )


def lane_settings(make_settings: Callable[..., Settings], url: str, **extra: Any) -> Settings:
    values = {"batch_pack_s": 0.3, "batch_poll_s": 0.3, "batch_wait_s": 1.0, "concurrency": 64}
    return make_settings(database_url=url, **{**values, **extra})


def tolerant(job_id: str, text: str, hours: float = 30.0, **extra: Any) -> dict[str, Any]:
    deadline = datetime.now(UTC) + timedelta(hours=hours)
    return chat_job(
        job_id,
        priority="low",
        deadline=deadline.isoformat(),
        messages=[{"role": "user", "content": text}],
        **extra,
    )


async def results_of(settings: Settings, count: int) -> dict[str, list[dict[str, Any]]]:
    collected = await read_topic(
        settings.kafka_bootstrap or "", settings.topics.results, until_keys=count, timeout_s=120
    )
    return collected.by_key


async def test_a_thousand_deadline_tolerant_jobs_go_through_two_batches_at_half_price(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    """(The lane's SQL runs on PostgreSQL in the budget test below and in
    test_batch_lane_ledger.py.)"""
    texts = [f"Summarise ledger entry {i}: " + "word " * (i % 37) for i in range(1000)]
    async with SimulatorServer(SimulatorConfig(seed=3, batch_delay_s=0.5)) as sim:
        # full batches go at once; a part-filled one would wait a minute
        settings = lane_settings(make_settings, sqlite_url, batch_max_items=500, batch_wait_s=60.0)
        async with running_worker(settings, lane_config(sim)) as worker:
            async with HeadwayClient(settings) as client:
                await client.submit_many([tolerant(f"b-{i}", t) for i, t in enumerate(texts)])
            batched = await results_of(settings, 1000)
            assert sim.stats.batches == 2 and sim.stats.batch_items == 1000
            assert sim.stats.chat_calls == 0  # nothing went online
            lane = worker.pipeline.batch_lane
            assert lane is not None and lane.submissions == 2 and lane.handed_over == 1000
            # the same texts, online (normal priority): the price to compare with
            async with HeadwayClient(settings) as client:
                await client.submit_many(
                    [
                        chat_job(f"o-{i}", messages=[{"role": "user", "content": t}])
                        for i, t in enumerate(texts)
                    ]
                )
            everything = await results_of(settings, 2000)
            assert sim.stats.chat_calls == 1000 and sim.stats.batches == 2
    assert all(len(copies) == 1 for copies in everything.values())
    batch = [copies[0] for copies in batched.values()]
    online = [everything[f"o-{i}"][0] for i in range(1000)]
    assert {r["status"] for r in batch} == {"succeeded"}
    assert {r["status"] for r in online} == {"succeeded"}
    for i in range(1000):  # the same tokens, and the output the online call gives
        b, o = everything[f"b-{i}"][0], everything[f"o-{i}"][0]
        assert b["usage"] == o["usage"]
        assert b["output"]["text"] == o["output"]["text"]
        assert b["deployment"] == "chat-model" and b["attempts"] == 1
    batch_cost = sum(r["cost_usd"] for r in batch)
    online_cost = sum(r["cost_usd"] for r in online)
    print(
        f"\nFIGURES batch lane: 1,000 jobs, {sim.stats.batches} submissions, batch cost "
        f"{batch_cost:.6f} USD, the same jobs online {online_cost:.6f} USD"
    )
    assert online_cost > 0
    assert batch_cost == pytest.approx(online_cost / 2, rel=1e-9)


async def test_items_the_provider_does_not_finish_go_back_online_and_still_finish(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    jobs = [tolerant(f"a-{i}", f"Summarise note {i}.") for i in range(30)]
    expiring = {f"a-{i}" for i in range(0, 30, 5)}
    for job in jobs:
        if job["job_id"] in expiring:
            job["messages"][0]["content"] += " sim:batch_expire"
    rushed = tolerant("rushed", "Summarise this soon.", hours=2)  # too near its deadline
    normal = chat_job("normal")  # normal priority, no deadline: online as ever
    async with SimulatorServer(SimulatorConfig(seed=5, batch_delay_s=0.3)) as sim:
        settings = lane_settings(make_settings, sqlite_url)
        async with running_worker(settings, lane_config(sim, "anthropic")):
            async with HeadwayClient(settings) as client:
                # every tolerant job twice: the copy finds it in the lane and does nothing
                await client.submit_many([*jobs, *jobs, rushed, normal])
            results = await results_of(settings, 32)
            await asyncio.sleep(1.0)  # time for any duplicate result to show up
            again = await results_of(settings, 32)
    assert all(len(copies) == 1 for copies in again.values()), "one result per job"
    assert {r["status"] for copies in results.values() for r in copies} == {"succeeded"}
    assert sim.stats.batches == 1  # all 30 in one submission; the provider answered 24 of them
    assert sim.stats.batch_items == 30 - len(expiring)
    # the expired ones, the rushed one and the normal one were called online
    assert sim.stats.chat_calls == len(expiring) + 2
    full = {k: c[0]["cost_usd"] for k, c in results.items()}
    per_token = {
        k: c[0]["cost_usd"]
        / (c[0]["usage"]["input_tokens"] * ONLINE_IN + c[0]["usage"]["output_tokens"] * ONLINE_OUT)
        * 1e6
        for k, c in results.items()
    }
    for job_id in full:
        expected = 1.0 if job_id in expiring | {"rushed", "normal"} else 0.5
        assert per_token[job_id] == pytest.approx(expected), job_id


async def test_a_job_waiting_in_the_lane_goes_online_when_its_deadline_comes_near(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    """With a long pack interval the job is never packed; once its deadline is within the
    fallback margin (here shortened), the sweep hands it back and it runs online."""
    async with SimulatorServer(SimulatorConfig(seed=9)) as sim:
        settings = lane_settings(make_settings, sqlite_url)
        async with running_worker(settings, lane_config(sim)) as worker:
            lane = worker.pipeline.batch_lane
            assert lane is not None
            lane.settings = BatchLaneSettings(3600.0, 3600.0, margin_s=31 * 3600.0)
            async with HeadwayClient(settings) as client:
                await client.submit(tolerant("late", "Summarise me."))
            assert await eventually(lambda: lane.handed_over == 1)
            await lane.pack_once()  # its 30 h deadline is inside the 31 h margin
            results = await results_of(settings, 1)
    (result,) = results["late"]
    assert result["status"] == "succeeded"
    assert sim.stats.batches == 0 and sim.stats.chat_calls == 1


async def test_a_budgeted_tenants_batched_jobs_count_at_the_batch_price_and_leave_no_holds(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    async with SimulatorServer(SimulatorConfig(seed=11, batch_delay_s=0.2)) as sim:
        base = lane_config(sim)
        tenant = base.tenants["demo"].model_copy(update={"budget_usd": 50.0})
        budgeted = base.model_copy(update={"tenants": {"demo": tenant}})
        settings = lane_settings(make_settings, database_url)
        async with running_worker(settings, budgeted):
            async with HeadwayClient(settings) as client:
                await client.submit_many([tolerant(f"m-{i}", f"Note {i}.") for i in range(20)])
            results = await results_of(settings, 20)
    assert sim.stats.batches == 1 and sim.stats.chat_calls == 0
    engine = create_engine(database_url)
    try:
        spent = await tenant_spend_usd(engine, "demo")
        async with engine.connect() as conn:
            holds = await conn.scalar(select(func.count()).select_from(BudgetHoldRow))
            budget = await conn.scalar(select(func.sum(BudgetRow.spent_nusd)))
    finally:
        await engine.dispose()
    cost = sum(copies[0]["cost_usd"] for copies in results.values())
    assert cost > 0 and spent == pytest.approx(cost)
    assert budget is not None and int(budget) / 1e9 == pytest.approx(cost)  # in its period
    assert holds == 0


async def test_jobs_waiting_in_the_lane_for_a_cancelled_batch_end_cancelled_unsent(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    async with SimulatorServer(SimulatorConfig(seed=13)) as sim:
        # a part-filled batch waits a minute: time to cancel the jobs in it
        settings = lane_settings(make_settings, sqlite_url, batch_wait_s=60.0)
        async with running_worker(settings, lane_config(sim)) as worker:
            lane = worker.pipeline.batch_lane
            cancellations = worker.pipeline.cancellations
            assert lane is not None and cancellations is not None
            jobs = [tolerant(f"c-{i}", f"Note {i}.", batch_id="dropme") for i in range(10)]
            async with HeadwayClient(settings) as client:
                await client.submit_many(jobs)
                assert await eventually(lambda: lane.handed_over == 10)
                engine = create_engine(sqlite_url)
                try:  # `headway status` tells the jobs waiting for a provider batch apart
                    waiting = await batch_status(engine, "dropme")
                finally:
                    await engine.dispose()
                assert waiting.in_batch_lane == 10 and waiting.finished == 0
                await client.cancel(
                    ControlCommand(action="cancel", tenant="demo", batch_id="dropme")
                )
                assert await eventually(lambda: cancellations.is_cancelled("demo", "x", "dropme"))
            lane.settings = BatchLaneSettings(0.3, 0.3, wait_s=0.0)  # pack now
            results = await results_of(settings, 10)
    assert {copies[0]["status"] for copies in results.values()} == {"cancelled"}
    assert all(len(copies) == 1 for copies in results.values())
    assert sim.stats.batches == 0 and sim.stats.chat_calls == 0


TOTAL = {
    "type": "json_schema",
    "json_schema": {
        "name": "total",
        "schema": {"type": "object", "properties": {"total": {"type": "number"}},
                   "required": ["total"]},
    },
}  # fmt: skip


@pytest.mark.parametrize("wire", ["simulator", "anthropic"])
async def test_a_batch_answer_failing_its_schema_is_asked_once_more_online(
    wire: str, make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    fixed = tolerant("fixed", "Total? sim:batch_invalid_json", params={"response_format": TOTAL})
    broken = tolerant("broken", "Total? sim:invalid_json", params={"response_format": TOTAL})
    async with SimulatorServer(SimulatorConfig(seed=8, batch_delay_s=0.3)) as sim:
        settings = lane_settings(make_settings, sqlite_url)
        async with running_worker(settings, lane_config(sim, wire)):
            async with HeadwayClient(settings) as client:
                await client.submit_many([fixed, broken])
            results = await results_of(settings, 2)
    good, bad = results["fixed"][0], results["broken"][0]
    assert good["status"] == "succeeded" and good["output"]["parsed"] == {"total": 0}
    assert good["attempts"] == 2
    assert bad["status"] == "failed" and bad["error"]["code"] == "invalid_output"
    assert sim.stats.batch_items == 2 and sim.stats.chat_calls == 2  # one online ask each
    for result in (good, bad):  # the batch answer at half price, the online one in full
        assert result["cost_usd"] > 0 and result["usage"]["input_tokens"] > 0
