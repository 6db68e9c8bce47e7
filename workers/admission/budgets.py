"""Money budgets: reserve a job's maximum cost before the call, settle to its actual cost
after — in each budget the job needs room in: its tenant's (per period), its team's
(``[teams.NAME]``, per period) and its batch's (a cap for the batch's life, from the jobs'
``batch_budget_usd`` or ``headway budget set``). A job runs only when all of them have room.

Periods are UTC calendar days (``day:2026-11-22``), months (``month:2026-11``) or ``total``.
A job's cost counts in the period in which it was admitted. The reservation is held in the
database (:class:`workers.ledger.quota_rows.BudgetLedger`) against the period's spend plus every
other running job's hold, under the budget row's lock, so concurrent jobs on any number of
workers cannot together pass the budget: spend stays within ``budget_usd`` whenever jobs
cost no more than their reservation, and within ``budget_usd`` + one job's overrun otherwise.

A job that does not fit only because of other running jobs' holds waits (its tenant is set
aside briefly) until they settle — their actual cost is usually below their maximum — and is
rejected (or deferred) only when the spend itself leaves no room for it.

A job's maximum cost is its estimated billed input (:class:`workers.calls.tokens.BilledInput`:
messages, images, documents, tool definitions, the response schema) plus its output allowance
(``max_tokens``, or :data:`workers.calls.tokens.DEFAULT_OUTPUT_TOKENS` when unset, and a
``prediction``) at the dearest deployment of its route.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from broker.config import BudgetPeriod, OnBudgetExhausted, RouteConfig, TeamConfig, TenantConfig
from schemas.jobs import JobRequest
from schemas.results import ErrorCode
from workers.admission import budget_alerts
from workers.admission.batch_caps import SeedGates
from workers.admission.periods import period_end, period_key
from workers.admission.quotas import Clock, Wait
from workers.calls.routing import Router
from workers.calls.tokens import BilledInput
from workers.ledger.database.models import from_nano, to_nano
from workers.ledger.database.transactions import Transact
from workers.ledger.quota_rows import (
    TOTAL,
    Budget,
    BudgetLedger,
    Hold,
    Reserved,
    account_period,
    batch_account,
    team_account,
)

DEFER_HOP_S = 300.0  # a deferred job looks again at least this often (a raised budget applies)
HOLDS_WAIT_S = 0.1  # how soon a job kept out only by running jobs' holds looks again


@dataclass(frozen=True, slots=True)
class OverBudget:
    """No room for the job's maximum cost: reject, or wait ``retry_s`` and look again."""

    message: str
    park: bool  # on_budget_exhausted = "defer": park the job until the next period
    retry_s: float
    code: ErrorCode = ErrorCode.BUDGET_EXCEEDED


@dataclass(frozen=True, slots=True)
class Scope:
    """One budget of a job, as the messages and alerts name it."""

    kind: str  # tenant | team | batch
    name: str  # the tenant's account, the team's name, or ``tenant/batch``
    period: BudgetPeriod
    budget: Budget
    park: bool  # what the budget's owner asked for when it is exhausted

    def label(self) -> str:
        return "budget" if self.kind == "tenant" else f"{self.kind} {self.name!r} budget"


class Budgets:
    def __init__(
        self,
        router: Router,
        run: Transact,
        owner: str,
        lease_s: float,
        clock: Clock,
        teams: Mapping[str, TeamConfig] | None = None,
        seeds: SeedGates | None = None,
    ) -> None:
        self._router = router
        self._run = run
        self._owner = owner
        self._lease_s = lease_s
        self._clock = clock
        self._teams = teams or {}
        self._seeds = seeds or SeedGates()
        self._ledger = BudgetLedger()

    def applies(self, job: JobRequest, tenant: TenantConfig) -> bool:
        """Whether the job may count against a budget (those that cannot pay nothing here):
        its tenant's, its team's, or its batch's — any batch may have a cap in the ledger."""
        return tenant.budget_usd is not None or tenant.team is not None or job.batch_id is not None

    def max_cost_usd(self, job: JobRequest, route: RouteConfig, billed: BilledInput) -> float:
        raw = billed.tokens
        return max(self._router.estimated_cost(d, job, raw) for d in route.deployments)

    def scopes(
        self, job: JobRequest, tenant: TenantConfig, account: str, at: datetime
    ) -> list[Scope]:
        """The job's budgets in lock order: tenant, team, batch."""
        found: list[Scope] = []
        if tenant.budget_usd is not None:
            period = f"{account}/{period_key(tenant.budget_period, at)}"
            budget = Budget(period, to_nano(tenant.budget_usd))
            park = tenant.on_budget_exhausted is OnBudgetExhausted.DEFER
            found.append(Scope("tenant", account, tenant.budget_period, budget, park))
        team = self._teams.get(tenant.team or "")
        if tenant.team is not None and team is not None:
            period = f"{team_account(tenant.team)}/{period_key(team.budget_period, at)}"
            budget = Budget(period, to_nano(team.budget_usd))
            park = team.on_budget_exhausted is OnBudgetExhausted.DEFER
            found.append(Scope("team", tenant.team, team.budget_period, budget, park))
        if job.batch_id is not None:  # its cap, if it has one, is read when reserving
            seed = None if job.batch_budget_usd is None else to_nano(job.batch_budget_usd)
            budget = Budget(f"{batch_account(job.tenant, job.batch_id)}/{TOTAL}", None, seed)
            park = tenant.on_budget_exhausted is OnBudgetExhausted.DEFER
            name = f"{job.tenant}/{job.batch_id}"
            found.append(Scope("batch", name, BudgetPeriod.TOTAL, budget, park))
        return found

    async def reserve(
        self,
        job: JobRequest,
        tenant: TenantConfig,
        route: RouteConfig,
        billed: BilledInput,
        account: str | None = None,
    ) -> Hold | OverBudget | Wait | None:
        """``account``: whose budget the job counts against (its tenant's by default). None:
        the job is in no budget with a limit (a batch without a cap): nothing is held."""
        now = self._clock()
        at = datetime.fromtimestamp(now, UTC)
        scopes = self.scopes(job, tenant, account or job.tenant, at)
        amount = max(1, to_nano(self.max_cost_usd(job, route, billed)))
        hold = Hold(job.tenant, job.job_id, tuple(s.budget.period for s in scopes), amount)
        budgets = [scope.budget for scope in scopes]
        gate = contextlib.nullcontext() if job.batch_id is None else self._seeds.reserving(
            job.tenant, job.batch_id, seeds=job.batch_budget_usd is not None
        )  # fmt: skip
        async with gate:
            reserved = await self._run(
                lambda conn: self._ledger.reserve(
                    conn, hold, budgets, self._owner, now, now + self._lease_s
                )
            )
        if reserved.ok:
            return dataclasses.replace(hold, periods=reserved.held) if reserved.held else None
        scope = scopes[reserved.refused]
        if reserved.conflict:
            message = (
                f"batch_budget_usd: {job.batch_budget_usd} differs from the cap "
                f"{from_nano(reserved.limit_nusd or 0):.2f} USD an earlier job of batch "
                f"{job.batch_id!r} set (an operator changes it with `headway budget set`)"
            )
            return OverBudget(message, False, 1.0, ErrorCode.INVALID_REQUEST)
        assert reserved.limit_nusd is not None
        limit = reserved.limit_nusd
        if reserved.spent_nusd + hold.amount_nusd <= limit:
            # only running jobs' holds stand in the way: their actual costs may leave room
            return Wait(HOLDS_WAIT_S, "budget", HOLDS_WAIT_S)
        await self._exhausted(scope, reserved, at, now)
        return OverBudget(_message(scope, reserved, hold), scope.park, _retry_s(scope, at, now))

    async def _exhausted(self, scope: Scope, reserved: Reserved, at: datetime, now: float) -> None:
        assert reserved.limit_nusd is not None
        _, period = account_period(scope.budget.period, scope.name)
        exhausted = budget_alerts.alert(
            scope.name, period, "budget_exhausted", from_nano(reserved.spent_nusd),
            from_nano(reserved.limit_nusd), at, scope=scope.kind,
        )  # fmt: skip
        await self._run(lambda conn: budget_alerts.insert_alerts(conn, [exhausted], now))

    async def drop(self, hold: Hold) -> None:
        """The job ends without a finish that settles it (parked, finished elsewhere)."""
        await self._run(lambda conn: self._ledger.drop(conn, hold.tenant, hold.job_id, self._owner))


def _message(scope: Scope, reserved: Reserved, hold: Hold) -> str:
    assert reserved.limit_nusd is not None
    per = "in all" if scope.period is BudgetPeriod.TOTAL else f"per {scope.period.value}"
    return (
        f"{scope.label()}: {from_nano(reserved.limit_nusd):.2f} USD {per} would be "
        f"exceeded (spent {from_nano(reserved.spent_nusd):.6f}, held by running jobs "
        f"{from_nano(reserved.held_nusd):.6f}, this job up to "
        f"{from_nano(hold.amount_nusd):.6f})"
    )


def _retry_s(scope: Scope, at: datetime, now: float) -> float:
    end = period_end(scope.period, at)
    retry_s = DEFER_HOP_S if end is None else min(DEFER_HOP_S, end.timestamp() - now)
    return max(retry_s, 1.0)
