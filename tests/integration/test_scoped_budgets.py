"""Team and batch budgets, across workers sharing one ledger (SQLite and PostgreSQL): a job needs
room in its tenant's, its team's and its batch's budget; each is held like a tenant's budget
(concurrent jobs on two workers cannot together pass it), its cost settles into every one, and
a refusal names the budget that had no room. A batch's cap comes from its first job's
``batch_budget_usd`` or from an operator's ``set_budget`` command, the later of two sets winning.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from broker.client import HeadwayClient
from broker.config import HeadwayConfig, TenantConfig, development_config
from broker.settings import CircuitSettings, LedgerSettings, Settings
from broker.topics import Topics
from schemas.control import ControlCommand
from schemas.jobs import JobRequest
from schemas.results import ErrorCode
from tests.helpers import chat_job, point_cli_at, read_topic, running_worker
from tests.integration.test_budget_alerts import Sink
from tests.integration.test_quotas import Clock, billed_of, finish_with_cost, pool_of
from workers.admission.batch_caps import BatchCaps
from workers.admission.budget_alerts import AlertPublisher
from workers.admission.budget_gauges import BudgetGauges
from workers.admission.budgets import Budgets, OverBudget
from workers.admission.gate import Admission, Ticket
from workers.admission.quotas import Wait
from workers.calls.health import HealthBoard
from workers.calls.limits import LimitBoard
from workers.calls.routing import DeploymentState, Router
from workers.calls.tokens import Calibration
from workers.cli.main import app
from workers.devstack.simulator import SimulatorServer
from workers.ledger import queries
from workers.ledger.database.engine import create_engine
from workers.ledger.database.models import BudgetAlertRow, BudgetHoldRow, BudgetRow, to_nano
from workers.ledger.records import Claim
from workers.ledger.repository import LedgerRepository
from workers.ledger.writer import LedgerWriter
from workers.runtime.readiness import Readiness

LEASE_S = 30.0
# each job: ~20 input tokens + 100 output tokens at $50/$100 per Mtok: 0.0106 USD at most
CONFIG = HeadwayConfig.model_validate(
    {
        "providers": {"sim": {"type": "simulator", "base_url": "http://127.0.0.1:1"}},
        "routes": {
            "summarize": {
                "kind": "chat",
                "deployments": [
                    {
                        "provider": "sim",
                        "model": "m",
                        "input_usd_per_mtok": 50.0,
                        "output_usd_per_mtok": 100.0,
                    }
                ],
            }
        },
        "teams": {"research": {"budget_usd": 0.1, "budget_period": "month"}},
        "tenants": {
            "lab-a": {"team": "research"},
            "lab-b": {"team": "research", "budget_usd": 1.0},
            "tight": {"team": "research", "budget_usd": 0.03},
            "solo": {},
        },
    }
)
ROUTE = CONFIG.routes["summarize"]
MAX_EACH = 10_600_000  # nano-USD: one job's maximum cost


def job(tenant: str, job_id: str, **overrides: Any) -> JobRequest:
    return JobRequest.model_validate(
        chat_job(job_id, tenant=tenant, params={"max_tokens": 100}, **overrides)
    )


class Replica:
    """One worker's admission over the shared database, with its own view of batch caps."""

    def __init__(self, url: str, owner: str, clock: Clock) -> None:
        self.engine = create_engine(url)
        self.writer = LedgerWriter(
            self.engine,
            LedgerRepository(owner, LEASE_S, clock),
            LedgerSettings(str(self.engine.url), owner, flush_ms=5, batch_max=500),
            Readiness(),
        )
        router = Router(
            DeploymentState(HealthBoard(CircuitSettings()), LimitBoard(8), Calibration())
        )
        self.caps = BatchCaps(self.writer.run, clock)
        budgets = Budgets(router, self.writer.run, owner, LEASE_S, clock, CONFIG.teams)
        self.admission = Admission(
            self.writer.run, budgets, owner, LEASE_S, clock=clock, account=CONFIG.account
        )

    async def admit(self, request: JobRequest) -> Ticket | Wait | OverBudget:
        tenant = CONFIG.tenant(request.tenant)
        assert tenant is not None
        return await self.admission.admit(request, tenant, ROUTE, billed_of(request))

    async def settle(self, request: JobRequest, ticket: Ticket, cost: int, at: float) -> None:
        assert ticket.hold is not None
        finish = finish_with_cost(request, cost, ticket.hold.key, at)
        async with self.engine.begin() as conn:
            await self.writer.repository.finish_many(conn, [finish])
        ticket.hold = None
        await self.admission.release(ticket, None, started=True)


@pytest.fixture
def replicas(
    database_url: str,
) -> Callable[[int, Clock], contextlib.AbstractAsyncContextManager[list[Any]]]:
    return pool_of(Replica, database_url)


def owner(workers: list[Replica], request: JobRequest) -> Replica:
    """The worker that admitted a job (job ids end in their index; even: worker 0)."""
    return workers[int(request.job_id.lstrip("tc")) % 2]


async def spent(replica: Replica, account: str) -> int:
    async with replica.engine.connect() as conn:
        found = await conn.execute(select(BudgetRow.spent_nusd).where(BudgetRow.tenant == account))
        return int(found.scalar_one_or_none() or 0)


async def test_a_teams_budget_holds_its_tenants_jobs_on_two_workers_and_names_itself(
    replicas: Any,
) -> None:
    clock = Clock()
    async with replicas(2, clock) as workers:
        requests = [job("lab-a" if i % 2 else "lab-b", f"t{i}") for i in range(30)]
        outcomes = await asyncio.gather(*(workers[i % 2].admit(r) for i, r in enumerate(requests)))
        admitted = [
            (r, t) for r, t in zip(requests, outcomes, strict=True) if isinstance(t, Ticket)
        ]
        assert len(admitted) == to_nano(0.1) // MAX_EACH  # 9: the team's, not lab-b's 1 USD
        assert all(isinstance(t, Wait) for t in outcomes if not isinstance(t, Ticket))
        for request, ticket in admitted:  # each costs its whole maximum
            await owner(workers, request).settle(request, ticket, MAX_EACH, clock.now)
        assert await spent(workers[0], "team:research") == len(admitted) * MAX_EACH
        lab_b = sum(1 for r, _ in admitted if r.tenant == "lab-b")
        assert await spent(workers[0], "lab-b") == lab_b * MAX_EACH  # its own budget too
        last = await workers[0].admit(job("lab-a", "t-last"))
        assert isinstance(last, OverBudget) and not last.park
        assert last.message.startswith("team 'research' budget: 0.10 USD per month")
        async with workers[0].engine.connect() as conn:
            holds = await conn.execute(select(func.count()).select_from(BudgetHoldRow))
            assert holds.scalar_one() == 0
            alerted = await conn.execute(select(BudgetAlertRow.scope, BudgetAlertRow.scope_key))
            assert [tuple(row) for row in alerted] == [("team", "research")]
        solo = await workers[1].admit(job("solo", "s-1"))  # no team, no budget: not held
        assert isinstance(solo, Ticket) and solo.hold is None


async def test_a_job_needs_room_in_its_tenants_budget_as_well_as_its_teams(replicas: Any) -> None:
    clock = Clock()
    async with replicas(1, clock) as (worker,):
        first = await worker.admit(job("tight", "a"))
        assert isinstance(first, Ticket) and first.hold is not None
        assert len(first.hold.periods) == 2  # tight/<day>, team:research/<month>
        await worker.settle(job("tight", "a"), first, to_nano(0.025), clock.now)
        refused = await worker.admit(job("tight", "b"))
        assert isinstance(refused, OverBudget)
        assert refused.message.startswith(
            "budget: 0.03 USD per day"
        )  # the tenant's, not the team's
        assert await spent(worker, "team:research") == to_nano(0.025)


async def test_a_batch_cap_set_by_its_first_job_holds_across_workers(replicas: Any) -> None:
    clock = Clock()
    async with replicas(2, clock) as workers:
        capped = [job("solo", f"c{i}", batch_id="b/1", batch_budget_usd=0.05) for i in range(12)]
        outcomes = await asyncio.gather(*(workers[i % 2].admit(r) for i, r in enumerate(capped)))
        admitted = [(r, t) for r, t in zip(capped, outcomes, strict=True) if isinstance(t, Ticket)]
        assert len(admitted) == to_nano(0.05) // MAX_EACH
        for request, ticket in admitted:
            await owner(workers, request).settle(request, ticket, MAX_EACH, clock.now)
        over = await workers[1].admit(job("solo", "c-over", batch_id="b/1", batch_budget_usd=0.05))
        assert isinstance(over, OverBudget) and over.code is ErrorCode.BUDGET_EXCEEDED
        assert over.message.startswith("batch 'solo/b/1' budget: 0.05 USD in all")
        # another value on a later job is refused, not silently ignored or applied
        other = await workers[0].admit(job("solo", "c-x", batch_id="b/1", batch_budget_usd=9.0))
        assert isinstance(other, OverBudget) and other.code is ErrorCode.INVALID_REQUEST
        assert "differs from the cap 0.05 USD" in other.message
        # a job of the batch that carries no cap is held too, on any worker, at once
        assert isinstance(await workers[1].admit(job("solo", "c-p2", batch_id="b/1")), OverBudget)
        # another batch, and the same batch id of another tenant, are not capped
        assert isinstance(await workers[0].admit(job("solo", "o1", batch_id="b/2")), Ticket)
        assert isinstance(await workers[0].admit(job("lab-a", "o2", batch_id="b/1")), Ticket)


async def test_a_zero_cap_set_by_a_job_stops_its_batch_and_is_its_cap(replicas: Any) -> None:
    clock = Clock()
    async with replicas(1, clock) as (worker,):
        first = await worker.admit(job("solo", "z1", batch_id="zero", batch_budget_usd=0.0))
        assert isinstance(first, OverBudget) and first.code is ErrorCode.BUDGET_EXCEEDED
        other = await worker.admit(job("solo", "z2", batch_id="zero", batch_budget_usd=5.0))
        assert isinstance(other, OverBudget) and other.code is ErrorCode.INVALID_REQUEST
        [cap] = (await queries.batch_status(worker.engine, "zero", "solo")).caps
        assert (cap.budget_usd, cap.source) == (0.0, "job")


async def test_an_operators_cap_starts_from_the_batchs_spend_and_the_later_set_wins(
    replicas: Any,
) -> None:
    clock = Clock()
    at = datetime.fromtimestamp(clock.now, UTC)

    def set_budget(usd: float, seconds: float) -> ControlCommand:
        return ControlCommand(
            action="set_budget",
            tenant="solo",
            batch_id="ops",
            budget_usd=usd,
            at=at + timedelta(seconds=seconds),
        )

    async with replicas(2, clock) as workers:
        # two jobs of the batch ran before it had a cap: their stored costs count
        for index in range(2):
            request = job("solo", f"early-{index}", batch_id="ops")
            ticket = await workers[0].admit(request)
            assert isinstance(ticket, Ticket) and ticket.hold is None
            async with workers[0].engine.begin() as conn:
                claim = Claim("solo", request.job_id, "ops", "chat", "summarize")
                await workers[0].writer.repository.claim_many(conn, [claim])
                finish = finish_with_cost(request, MAX_EACH, "", clock.now)
                unbudgeted = dataclasses.replace(finish, budget_period=None, batch_id="ops")
                await workers[0].writer.repository.finish_many(conn, [unbudgeted])
        await workers[0].caps.set(set_budget(0.05, 1))
        await workers[1].caps.set(set_budget(0.03, 2))  # the later
        await workers[0].caps.set(set_budget(0.05, 1))  # read again by a slow worker: no effect
        status = await queries.batch_status(workers[0].engine, "ops", "solo")
        [cap] = status.caps
        assert (cap.budget_usd, cap.source, cap.tenant) == (0.03, "operator", "solo")
        assert cap.spent_usd == pytest.approx(2 * MAX_EACH / 1e9)
        refused = await workers[0].admit(job("solo", "late", batch_id="ops"))  # 0.0212 + 0.0106
        assert isinstance(refused, OverBudget)
        await workers[1].caps.set(set_budget(0.5, 3))  # raised: the batch goes on
        assert isinstance(await workers[0].admit(job("solo", "late", batch_id="ops")), Ticket)
        # a job's own value does not override an operator's cap
        seeded = job("solo", "late-2", batch_id="ops", batch_budget_usd=0.01)
        assert isinstance(await workers[1].admit(seeded), Ticket)


async def test_team_and_batch_budgets_are_alerted_once_with_their_scope(database_url: str) -> None:
    clock = Clock()
    config = CONFIG
    replica = Replica(database_url, "w", clock)
    try:
        async with replica.engine.begin() as conn:  # spend as jobs would have settled it
            now = clock.now
            month = datetime.fromtimestamp(now, UTC).strftime("month:%Y-%m")
            conn_rows = [
                {"tenant": "team:research", "period": month, "spent_nusd": to_nano(0.085)},
                {"tenant": "batch:solo/b 7", "period": "total", "spent_nusd": to_nano(0.6),
                 "limit_nusd": to_nano(1.0), "limit_source": "job"},
            ]  # fmt: skip
            for row in conn_rows:
                await conn.execute(BudgetRow.__table__.insert().values(updated_at=now, **row))
        sink = Sink()
        alerts = AlertPublisher(config, replica.writer.run, sink, Topics("hw"), "w", clock)
        gauges = BudgetGauges(config, replica.writer.run, clock, alerts)
        for _ in range(2):  # two refreshes (or two workers) notice the same crossings once
            await gauges.refresh()
            await alerts.notice(gauges._spends)
        assert await alerts.publish_pending() == 3
        assert gauges.spent("team") == {"research": pytest.approx(0.085)}
        events = sorted((r.key or b"", r.value or b"") for r in sink.sent)
        found = sorted(
            (key.decode(), json.loads(value)["scope"], json.loads(value)["threshold"])
            for key, value in events
        )
        assert found == [
            ("research", "team", 0.5),
            ("research", "team", 0.8),
            ("solo", "batch", 0.5),
        ]
        batch_event = next(json.loads(v) for k, v in events if k == b"solo")
        assert (batch_event["tenant"], batch_event["batch_id"]) == ("solo", "b 7")
        team_event = next(json.loads(v) for k, v in events if k == b"research")
        assert (team_event["tenant"], team_event["team"]) == (None, "research")
    finally:
        await replica.engine.dispose()


def test_a_tenant_names_a_team_the_config_has() -> None:
    with pytest.raises(ValueError, match=r"tenants\.x\.team: no team named 'nope'"):
        HeadwayConfig.model_validate({"tenants": {"x": {"team": "nope"}}})
    assert TenantConfig(team="research").team == "research"


async def test_headway_budget_set_caps_a_running_workers_batch_over_the_control_topic(
    make_settings: Callable[..., Settings],
    database_url: str,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(database_url=database_url)
    point_cli_at(settings, monkeypatch)
    config = development_config(simulator.base_url)
    bootstrap = settings.kafka_bootstrap or ""
    async with running_worker(settings, config), HeadwayClient(settings) as client:
        told = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            ["budget", "set", "--tenant", "demo", "--batch", "capped", "--usd", "0"],
        )
        assert told.exit_code == 0, told.output
        ledger = create_engine(database_url)
        try:  # stored by the worker's control follower
            for _ in range(300):
                if (await queries.batch_status(ledger, "capped", "demo")).caps:
                    break
                await asyncio.sleep(0.05)
        finally:
            await ledger.dispose()
        jobs = [chat_job(f"c-{i}", batch_id="capped") for i in range(3)]
        jobs += [chat_job(f"f-{i}", batch_id="free") for i in range(2)]
        jobs.append(chat_job("s-1", batch_id="seeded", batch_budget_usd=1.0))
        await client.submit_many(jobs)
        results = await read_topic(bootstrap, settings.topics.results, until_keys=6)
        await client.submit(chat_job("s-2", batch_id="seeded", batch_budget_usd=2.0))
        results = await read_topic(bootstrap, settings.topics.results, until_keys=7)
    outcome = {key: copies[0] for key, copies in results.by_key.items()}
    for i in range(3):
        assert outcome[f"c-{i}"]["status"] == "rejected"
        assert outcome[f"c-{i}"]["error"]["code"] == "budget_exceeded"
        assert outcome[f"c-{i}"]["error"]["message"].startswith("batch 'demo/capped' budget")
    assert [outcome[k]["status"] for k in ("f-0", "f-1", "s-1")] == ["succeeded"] * 3
    assert outcome["s-2"]["error"]["code"] == "invalid_request"
    assert simulator.stats.calls == 3
    engine = create_engine(database_url)
    try:
        [cap] = (await queries.batch_status(engine, "seeded")).caps
        assert (cap.tenant, cap.budget_usd, cap.source) == ("demo", 1.0, "job")
        assert cap.spent_usd == pytest.approx(outcome["s-1"]["cost_usd"]) and cap.spent_usd > 0
    finally:
        await engine.dispose()
    status = await asyncio.to_thread(CliRunner().invoke, app, ["status", "--batch", "capped"])
    assert status.exit_code == 0, status.output
    assert "0.000000 of 0.00 (operator)" in status.output
