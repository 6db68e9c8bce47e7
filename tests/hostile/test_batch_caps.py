"""A batch's cap is a ledger fact, read in the transaction that reserves each of the batch's
jobs — never a worker's memory of it. Jobs right behind the job that set a $0 cap ran uncapped
(20 of 20) until the worker's next look, a worker that had not looked yet ran them too, and a
cap untouched for 30 days was forgotten by a restarted worker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from broker.client import HeadwayClient
from broker.config import development_config
from broker.settings import Settings
from schemas.control import ControlCommand
from schemas.results import ErrorCode
from tests.helpers import chat_job, read_topic, running_worker
from tests.integration.test_quotas import Clock, pool_of
from tests.integration.test_scoped_budgets import Replica, job
from workers.admission.budgets import OverBudget
from workers.admission.gate import Ticket
from workers.devstack.simulator import SimulatorServer

DAY_S = 86_400.0


@pytest.fixture
def replicas(database_url: str) -> Any:
    """Workers' admissions over one ledger (SQLite and PostgreSQL), each started afresh."""
    return pool_of(Replica, database_url)


def refused_by_cap(outcome: object, batch: str) -> bool:
    return (
        isinstance(outcome, OverBudget)
        and outcome.code is ErrorCode.BUDGET_EXCEEDED
        and outcome.message.startswith(f"batch 'solo/{batch}' budget")
    )


async def test_twenty_jobs_right_behind_the_job_setting_a_zero_cap_do_not_run(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url)
    bootstrap = settings.kafka_bootstrap or ""
    config = development_config(simulator.base_url)
    async with running_worker(settings, config), HeadwayClient(settings) as client:
        await client.submit(chat_job("cap", batch_id="zero", batch_budget_usd=0.0))
        await read_topic(bootstrap, settings.topics.results, until_keys=1)
        await client.submit_many([chat_job(f"z-{i}", batch_id="zero") for i in range(20)])
        found = await read_topic(bootstrap, settings.topics.results, until_keys=21)
    outcomes = {key: copies[0] for key, copies in found.by_key.items()}
    assert len(outcomes) == 21
    for job_id, result in outcomes.items():
        assert result["status"] == "rejected", (job_id, result)
        assert result["error"]["code"] == "budget_exceeded"
    assert simulator.stats.calls == 0


async def test_a_cap_a_job_set_binds_the_next_job_on_a_worker_that_never_looked(
    replicas: Any,
) -> None:
    clock = Clock()
    async with replicas(2, clock) as (setter, other):
        first = await setter.admit(job("solo", "seed", batch_id="zero", batch_budget_usd=0.0))
        assert refused_by_cap(first, "zero")
        for i in range(20):
            assert refused_by_cap(await other.admit(job("solo", f"z{i}", batch_id="zero")), "zero")
            assert refused_by_cap(await setter.admit(job("solo", f"y{i}", batch_id="zero")), "zero")
        # the same batch id of another tenant, and another batch, have no cap
        assert isinstance(await other.admit(job("lab-a", "theirs", batch_id="zero")), Ticket)
        assert isinstance(await other.admit(job("solo", "free", batch_id="free")), Ticket)


async def test_jobs_reaching_admission_while_the_cap_setting_job_reserves_wait_for_its_cap(
    replicas: Any,
) -> None:
    clock = Clock()
    async with replicas(1, clock) as (worker,):
        seed = job("solo", "seed", batch_id="zero", batch_budget_usd=0.0)
        behind = [job("solo", f"z{i}", batch_id="zero") for i in range(20)]
        outcomes = await asyncio.gather(*(worker.admit(request) for request in [seed, *behind]))
    for outcome in outcomes:
        assert refused_by_cap(outcome, "zero")


async def test_an_operators_cap_binds_every_worker_at_once(replicas: Any) -> None:
    clock = Clock()
    async with replicas(2, clock) as (reader, other):
        at = datetime.fromtimestamp(clock.now, UTC)
        command = ControlCommand(
            action="set_budget", tenant="solo", batch_id="ops", budget_usd=0.0, at=at
        )
        await reader.caps.set(command)  # this worker's control follower read it; the other not
        assert refused_by_cap(await other.admit(job("solo", "o1", batch_id="ops")), "ops")
        assert refused_by_cap(await reader.admit(job("solo", "o2", batch_id="ops")), "ops")


async def test_a_cap_older_than_thirty_days_survives_a_restart(
    database_url: str,
) -> None:
    clock = Clock()
    before = Replica(database_url, "worker-a", clock)
    try:
        first = await before.admit(job("solo", "seed", batch_id="slow", batch_budget_usd=0.0))
        assert refused_by_cap(first, "slow")
        at = datetime.fromtimestamp(clock.now, UTC)
        command = ControlCommand(
            action="set_budget", tenant="solo", batch_id="ops", budget_usd=0.0, at=at
        )
        await before.caps.set(command)
    finally:
        await before.engine.dispose()
    clock.now += 45 * DAY_S  # idle for 45 days; then a worker starts
    after = Replica(database_url, "worker-b", clock)
    try:
        assert refused_by_cap(await after.admit(job("solo", "late", batch_id="slow")), "slow")
        assert refused_by_cap(await after.admit(job("solo", "late-op", batch_id="ops")), "ops")
    finally:
        await after.engine.dispose()
