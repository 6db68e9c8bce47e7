"""Quotas and budgets held across workers that share one ledger database.

Each "worker" here is its own Admission (own owner id, own engine, own local leases) over the
same SQLite file or PostgreSQL database; time is a shared fake clock, so minutes of traffic
take milliseconds and the windows can be checked exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from broker.config import BudgetPeriod, HeadwayConfig, OnBudgetExhausted, TenantConfig
from broker.settings import CircuitSettings, LedgerSettings
from schemas.jobs import JobRequest
from tests.helpers import chat_job
from workers.admission.budgets import Budgets, OverBudget
from workers.admission.gate import Admission, Ticket
from workers.admission.quotas import Wait, over_admission_bound
from workers.calls.health import HealthBoard
from workers.calls.limits import LimitBoard
from workers.calls.routing import DeploymentState, Router
from workers.calls.tokens import BilledInput, Calibration
from workers.ledger.database.engine import create_engine
from workers.ledger.database.models import (
    BudgetAlertRow,
    BudgetHoldRow,
    BudgetRow,
    QuotaGrantRow,
    RowStatus,
)
from workers.ledger.records import Finish, UsageRecord
from workers.ledger.repository import LedgerRepository
from workers.ledger.writer import LedgerWriter
from workers.runtime.readiness import Readiness

LEASE_S = 30.0


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def route_config(price_in: float = 1.0, price_out: float = 2.0) -> HeadwayConfig:
    return HeadwayConfig.model_validate(
        {
            "providers": {"sim": {"type": "simulator", "base_url": "http://127.0.0.1:1"}},
            "routes": {
                "summarize": {
                    "kind": "chat",
                    "deployments": [
                        {
                            "provider": "sim",
                            "model": "m",
                            "input_usd_per_mtok": price_in,
                            "output_usd_per_mtok": price_out,
                        }
                    ],
                }
            },
        }
    )


def job(job_id: str, **overrides: Any) -> JobRequest:
    return JobRequest.model_validate(chat_job(job_id, tenant="acme", **overrides))


def billed_of(request: JobRequest) -> BilledInput:
    """The job's billed input, as the pipeline hands it to admission."""
    messages = [{"role": m.role, "content": m.content} for m in request.messages or []]
    return BilledInput(request, messages)


class Replica:
    """One worker's admission state over the shared database."""

    def __init__(self, url: str, owner: str, clock: Clock) -> None:
        self.engine = create_engine(url)
        self.owner = owner
        self.writer = LedgerWriter(
            self.engine,
            LedgerRepository(owner, LEASE_S, clock),
            LedgerSettings(str(self.engine.url), owner, flush_ms=5, batch_max=500),
            Readiness(),
        )
        router = Router(
            DeploymentState(HealthBoard(CircuitSettings()), LimitBoard(8), Calibration())
        )
        budgets = Budgets(router, self.writer.run, owner, LEASE_S, clock)
        self.admission = Admission(self.writer.run, budgets, owner, LEASE_S, clock=clock)


def pool_of(
    kind: Callable[[str, str, Clock], Any], url: str
) -> Callable[[int, Clock], contextlib.AbstractAsyncContextManager[list[Any]]]:
    """``count`` workers (``kind``: how one is built) over the database at ``url``."""

    @contextlib.asynccontextmanager
    async def make(count: int, clock: Clock) -> AsyncIterator[list[Any]]:
        made = [kind(url, f"worker-{i}", clock) for i in range(count)]
        try:
            yield made
        finally:
            for replica in made:
                await replica.engine.dispose()

    return make


@pytest.fixture
def replicas(
    database_url: str,
) -> Callable[[int, Clock], contextlib.AbstractAsyncContextManager[list[Any]]]:
    return pool_of(Replica, database_url)


async def test_rpm_holds_in_every_sliding_minute_across_two_workers(replicas: Any) -> None:
    clock = Clock()
    tenant = TenantConfig(rpm=600)
    route = route_config().routes["summarize"]
    admitted: list[float] = []
    async with replicas(2, clock) as (one, two):
        for step in range(150 * 10):  # 150 s, both workers asking every 100 ms (2 × the rate)
            clock.now += 0.1
            for replica in (one, two):
                request = job(f"j{step}-{replica.owner}")
                outcome = await replica.admission.admit(request, tenant, route, billed_of(request))
                if isinstance(outcome, Ticket):
                    admitted.append(clock.now)
                    await replica.admission.release(outcome, 10, started=True)
                else:
                    assert isinstance(outcome, Wait) and outcome.reason == "rpm"
                    assert outcome.seconds > 0
    bound = over_admission_bound(600, workers=2)
    worst = max(sum(1 for t in admitted if start <= t < start + 60) for start in admitted)
    assert worst <= bound <= 600 * 1.05
    assert worst >= 600  # and the quota is used, not starved
    assert len(admitted) >= 2.5 * 600 * 0.95


async def test_concurrent_takers_cannot_pass_the_bucket_at_one_instant(replicas: Any) -> None:
    clock = Clock()
    tenant = TenantConfig(rpm=600)  # bucket: 10 tokens; leases of 2
    route = route_config().routes["summarize"]
    async with replicas(2, clock) as workers:

        async def attempt(index: int) -> bool:
            replica = workers[index % 2]
            request = job(f"c{index}")
            outcome = await replica.admission.admit(request, tenant, route, billed_of(request))
            return isinstance(outcome, Ticket)

        results = await asyncio.gather(*(attempt(i) for i in range(100)))
    assert sum(results) <= over_admission_bound(600, workers=2) - 600
    assert sum(results) >= 8


async def test_max_in_flight_is_exact_across_workers_and_a_dead_workers_slots_return(
    replicas: Any,
) -> None:
    clock = Clock()
    tenant = TenantConfig(max_in_flight=10)
    route = route_config().routes["summarize"]
    async with replicas(3, clock) as workers:

        async def attempt(index: int, replica: Replica) -> bool:
            request = job(f"s{index}")
            outcome = await replica.admission.admit(request, tenant, route, billed_of(request))
            return isinstance(outcome, Ticket)

        doomed = workers[2]
        assert all([await attempt(i, doomed) for i in range(4)])  # it will die holding 4
        live = await asyncio.gather(*(attempt(10 + i, workers[i % 2]) for i in range(40)))
        assert sum(live) == 6  # all ten slots taken, none twice
        assert not any(await asyncio.gather(*(attempt(100 + i, workers[0]) for i in range(10))))
        clock.now += LEASE_S + 1  # the doomed worker stops renewing; the others renew
        for replica in workers[:2]:
            await replica.admission.renew()
        later = await asyncio.gather(*(attempt(200 + i, workers[0]) for i in range(20)))
        assert sum(later) == 4  # its slots came back, and only its
        async with workers[0].engine.connect() as conn:
            held = select(func.sum(QuotaGrantRow.amount)).where(
                QuotaGrantRow.expires_at > clock.now
            )
            assert (await conn.execute(held)).scalar_one() == 10


async def test_tpm_reserves_the_estimate_and_settles_to_reported_usage(replicas: Any) -> None:
    clock = Clock()
    tenant = TenantConfig(tpm=6000)  # 100 tokens/s, bucket of 100
    route = route_config().routes["summarize"]
    async with replicas(1, clock) as (replica,):
        request = job("t1", params={"max_tokens": 60})
        first = await replica.admission.admit(request, tenant, route, billed_of(request))
        assert isinstance(first, Ticket) and first.tpm_reserved > 60
        second = await replica.admission.admit(
            job("t2", params={"max_tokens": 60}), tenant, route, billed_of(request)
        )
        assert isinstance(second, Wait) and second.reason == "tpm"
        await replica.admission.release(first, 10, started=True)  # used far less
        third = await replica.admission.admit(
            job("t3", params={"max_tokens": 60}), tenant, route, billed_of(request)
        )
        assert isinstance(third, Ticket)  # the unused tokens went back to the bucket


def finish_with_cost(request: JobRequest, cost_nusd: int, period: str, at: float) -> Finish:
    usage = UsageRecord(
        event_id=f"ev-{request.job_id}",
        route="summarize",
        provider="sim",
        deployment="m",
        input_tokens=10,
        output_tokens=10,
        cost_nusd=cost_nusd,
        cached=False,
        timestamp=at,
        payload="{}",
    )
    return Finish(
        tenant=request.tenant,
        job_id=request.job_id,
        status=RowStatus.SUCCEEDED,
        result_json="{}",
        completed_at=at,
        cost_nusd=cost_nusd,
        usage=(usage,),
        budget_period=period,
    )


async def test_budget_holds_concurrent_jobs_within_the_limit_and_settles_actual_cost(
    replicas: Any,
) -> None:
    clock = Clock()
    # each job: ~20 input tokens + 100 output tokens at $50/$100 per Mtok ≈ $0.011 max
    config = route_config(price_in=50.0, price_out=100.0)
    route = config.routes["summarize"]
    tenant = TenantConfig(budget_usd=0.10, budget_period=BudgetPeriod.DAY)
    limit = 100_000_000
    async with replicas(2, clock) as workers:

        async def attempt(index: int) -> tuple[JobRequest, Ticket | OverBudget | Wait]:
            request = job(f"b{index}", params={"max_tokens": 100})
            outcome = await workers[index % 2].admission.admit(
                request, tenant, route, billed_of(request)
            )
            return request, outcome

        async def settle(request: JobRequest, ticket: Ticket, cost: int) -> None:
            assert ticket.hold is not None
            finish = finish_with_cost(request, cost, ticket.hold.key, clock.now)
            replica = workers[int(request.job_id[1:]) % 2]
            async with replica.engine.begin() as conn:
                await replica.writer.repository.finish_many(conn, [finish])
            ticket.hold = None
            await replica.admission.release(ticket, None, started=True)

        outcomes = await asyncio.gather(*(attempt(i) for i in range(40)))
        admitted = [(r, t) for r, t in outcomes if isinstance(t, Ticket)]
        max_each = admitted[0][1].hold.amount_nusd  # type: ignore[union-attr]
        assert len(admitted) == limit // max_each  # as many as fit, no more
        # the others are kept out by running jobs' holds only: they wait, not rejected
        assert all(
            isinstance(t, Wait) and t.reason == "budget"
            for _, t in outcomes[len(admitted) :]
            if not isinstance(t, Ticket)
        )
        charged = 0
        for request, ticket in admitted:  # they cost half their maximum: room for more
            assert ticket.hold is not None
            charged += ticket.hold.amount_nusd // 2
            await settle(request, ticket, ticket.hold.amount_nusd // 2)
        async with workers[0].engine.connect() as conn:
            spent = (await conn.execute(select(BudgetRow.spent_nusd))).scalar_one()
            holds = select(func.count()).select_from(BudgetHoldRow)
            assert (await conn.execute(holds)).scalar_one() == 0
        assert spent == charged
        more = await asyncio.gather(*(attempt(100 + i) for i in range(40)))
        extra = [(r, t) for r, t in more if isinstance(t, Ticket)]
        assert len(extra) == (limit - spent) // max_each
        for request, ticket in extra:  # these cost their whole maximum
            assert ticket.hold is not None
            await settle(request, ticket, ticket.hold.amount_nusd)
        _, last = await attempt(1000)  # the spend itself leaves no room now
        assert isinstance(last, OverBudget) and not last.park
        assert "budget" in last.message
        async with workers[0].engine.connect() as conn:
            spent = (await conn.execute(select(BudgetRow.spent_nusd))).scalar_one()
        assert limit - max_each < spent <= limit


async def test_a_deferring_budget_says_when_to_look_again(replicas: Any) -> None:
    clock = Clock(1_700_000_000.0)  # 2023-11-14 22:13:20 UTC: the day resets in 6,400 s
    route = route_config(price_in=50.0, price_out=100.0).routes["summarize"]
    tenant = TenantConfig(
        budget_usd=0.0, budget_period=BudgetPeriod.DAY, on_budget_exhausted=OnBudgetExhausted.DEFER
    )
    async with replicas(1, clock) as (replica,):
        request = job("d1")
        outcome = await replica.admission.admit(request, tenant, route, billed_of(request))
    assert isinstance(outcome, OverBudget) and outcome.park
    assert outcome.retry_s == 300.0  # looks again every 5 minutes until the period resets
    async with replica.engine.connect() as conn:  # the refusal is alerted, once
        alerted = (await conn.execute(select(BudgetAlertRow.kind, BudgetAlertRow.period))).all()
    assert [tuple(row) for row in alerted] == [("budget_exhausted", "day:2023-11-14")]
