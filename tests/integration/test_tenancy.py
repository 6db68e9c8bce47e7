"""Quotas and budgets end to end: the real broker, real HTTP to the simulator, PostgreSQL.

A throttled tenant's calls are paced by its quota while another tenant in the same lane runs
at full speed; a tenant's budget admits what fits and rejects the rest, and the ledger's spend
equals the usage events to the nano-dollar.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.client import HeadwayClient
from broker.config import HeadwayConfig, parse_config
from broker.settings import Settings
from broker.topics import HEADER_NOT_BEFORE
from tests.helpers import chat_job, read_topic, running_worker
from workers.admission.quotas import over_admission_bound
from workers.devstack.simulator import SimulatorConfig, SimulatorServer
from workers.ledger.database.engine import create_engine
from workers.ledger.database.models import BudgetRow, UsageRow, to_nano

pytestmark = pytest.mark.integration


def tenancy_config(simulator_url: str, tenants: dict[str, Any]) -> HeadwayConfig:
    return parse_config(
        {
            "providers": {"sim": {"type": "simulator", "base_url": simulator_url}},
            "routes": {
                "summarize": {
                    "kind": "chat",
                    "deployments": [
                        {
                            "provider": "sim",
                            "model": "m",
                            "input_usd_per_mtok": 100.0,
                            "output_usd_per_mtok": 200.0,
                        }
                    ],
                }
            },
            "tenants": tenants,
        }
    )


async def test_a_tenant_over_its_rpm_is_paced_while_another_tenant_in_its_lane_runs_freely(
    make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    async with SimulatorServer(SimulatorConfig(seed=1, latency_ms=20)) as simulator:
        config = tenancy_config(simulator.base_url, {"slow": {"rpm": 120}, "free": {}})
        # a small buffer: the slow tenant's backlog must not crowd out the free tenant's jobs
        settings = make_settings(database_url=postgres_url, buffer_max_jobs=48, concurrency=16)
        bootstrap = settings.kafka_bootstrap or ""
        async with running_worker(settings, config):
            async with HeadwayClient(settings) as client:
                await client.submit_many(
                    chat_job(f"slow-{i}", tenant="slow", batch_id="b") for i in range(300)
                )
                submitted = time.monotonic()
                await client.submit_many(
                    chat_job(f"free-{i}", tenant="free", batch_id="b") for i in range(20)
                )
            while True:  # until the free tenant's 20 results are in (the slow ones trickle)
                results = await read_topic(
                    bootstrap, settings.topics.results, until_keys=10**6, timeout_s=0.5
                )
                free_done_s = time.monotonic() - submitted
                if sum(k.startswith("free-") for k in results.by_key) == 20 or free_done_s > 60:
                    break
            spilled = await read_topic(bootstrap, settings.topics.retry, until_keys=1, timeout_s=5)
    by_key = {key: copies[0] for key, copies in results.by_key.items()}
    free = [r for k, r in by_key.items() if k.startswith("free-")]
    assert len(free) == 20 and all(r["status"] == "succeeded" for r in free)
    assert free_done_s < 15  # not behind 300 jobs at 2 per second (150 s)
    assert spilled.records  # the slow tenant's excess waited on the retry topic
    slow_calls = sorted(t for t, job in simulator.stats.timeline if job.startswith("slow-"))
    assert slow_calls, "the slow tenant made progress"
    assert all(by_key[k]["status"] == "succeeded" for k in by_key if k.startswith("slow-"))
    # calls paced by the shared bucket: at most burst + rate × elapsed by any moment
    burst = over_admission_bound(120, workers=1) - 120
    first = slow_calls[0]
    for index, at in enumerate(slow_calls):
        assert index + 1 <= burst + 2.0 * (at - first) + 1, (index, at - first)


async def test_a_budget_admits_what_fits_rejects_the_rest_and_spend_equals_usage_events(
    make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    async with SimulatorServer(SimulatorConfig(seed=2, latency_ms=50)) as simulator:
        tenants = {"capped": {"budget_usd": 0.05, "budget_period": "total"}}
        config = tenancy_config(simulator.base_url, tenants)
        settings = make_settings(database_url=postgres_url, concurrency=64)
        bootstrap = settings.kafka_bootstrap or ""
        jobs = [chat_job(f"c-{i}", tenant="capped", params={"max_tokens": 50}) for i in range(60)]
        async with running_worker(settings, config):
            async with HeadwayClient(settings) as client:
                await client.submit_many(jobs)
            results = await read_topic(bootstrap, settings.topics.results, until_keys=60)
            usage = await read_topic(
                bootstrap, settings.topics.usage, until_keys=10**6, timeout_s=3
            )
    statuses = [copies[0]["status"] for copies in results.by_key.values()]
    rejected = [c[0] for c in results.by_key.values() if c[0]["status"] == "rejected"]
    assert statuses.count("succeeded") >= 1 and rejected
    assert statuses.count("succeeded") + len(rejected) == 60
    assert all(r["error"]["code"] == "budget_exceeded" for r in rejected)
    events = {e["event_id"]: e for e in (json.loads(r.value) for r in usage.records)}
    spend_events = sum(to_nano(e["cost_usd"]) for e in events.values())
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            budget = (await conn.execute(select(BudgetRow.spent_nusd))).scalar_one()
            ledger = (
                await conn.execute(
                    select(func.sum(UsageRow.cost_nusd)).where(UsageRow.tenant == "capped")
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    assert budget == ledger == spend_events
    assert budget <= to_nano(0.05)
    assert simulator.stats.chat_calls == statuses.count("succeeded")


async def test_a_deferring_budget_parks_the_job_until_it_may_run(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    tenants = {"later": {"budget_usd": 0.0, "on_budget_exhausted": "defer"}}
    config = tenancy_config(simulator.base_url, tenants)
    settings = make_settings(database_url=sqlite_url)
    bootstrap = settings.kafka_bootstrap or ""
    async with running_worker(settings, config):
        async with HeadwayClient(settings) as client:
            await client.submit(chat_job("waits", tenant="later"))
        parked = await read_topic(bootstrap, settings.topics.retry, until_keys=1, timeout_s=20)
        results = await read_topic(bootstrap, settings.topics.results, until_keys=1, timeout_s=1)
    assert not results.records  # not rejected, not run
    assert simulator.stats.calls == 0
    headers = dict(parked.records[0].headers)
    not_before = int(headers[HEADER_NOT_BEFORE]) / 1000
    assert 250 < not_before - time.time() <= 300  # it looks again within five minutes
    await asyncio.sleep(0)


async def test_tenants_served_by_the_default_entry_share_one_budget_whatever_their_names(
    make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    async with SimulatorServer(SimulatorConfig(seed=2, latency_ms=20)) as simulator:
        tenants = {"default": {"budget_usd": 0.02, "budget_period": "total"}}
        config = tenancy_config(simulator.base_url, tenants)
        settings = make_settings(database_url=postgres_url, concurrency=32)
        bootstrap = settings.kafka_bootstrap or ""
        # each name minted for more budget: 6 names × 10 jobs
        jobs = [
            chat_job(f"m{n}-{i}", tenant=f"mallory{n}", params={"max_tokens": 50})
            for n in range(6)
            for i in range(10)
        ]
        async with running_worker(settings, config):
            async with HeadwayClient(settings) as client:
                await client.submit_many(jobs)
            results = await read_topic(bootstrap, settings.topics.results, until_keys=60)
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            budgets = (await conn.execute(select(BudgetRow.tenant, BudgetRow.spent_nusd))).all()
            spent = (await conn.execute(select(func.sum(UsageRow.cost_nusd)))).scalar_one()
    finally:
        await engine.dispose()
    statuses = [copies[0]["status"] for copies in results.by_key.values()]
    assert [tenant for tenant, _ in budgets] == ["default"]  # one account, not six
    assert budgets[0][1] == spent <= to_nano(0.02)
    assert 1 <= statuses.count("succeeded") < 30  # one budget's worth, not six
    assert statuses.count("rejected") + statuses.count("succeeded") == 60
