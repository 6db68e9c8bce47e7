"""Money budgets per tenant and period: reserve a job's maximum cost before the call, settle
to its actual cost after.

Periods are UTC calendar days (``day:2026-11-22``), months (``month:2026-11``) or ``total``.
A job's cost counts in the period in which it was admitted. The reservation is held in the
database (:class:`workers.ledger.quota_rows.BudgetLedger`) against the period's spend plus every
other running job's hold, under the budget row's lock, so concurrent jobs on any number of
workers cannot together pass the budget: spend stays within ``budget_usd`` whenever jobs
cost no more than their reservation, and within ``budget_usd`` + one job's overrun otherwise.

A job that does not fit only because of other running jobs' holds waits (its tenant is set
aside briefly) until they settle — their actual cost is usually below their maximum — and is
rejected (or deferred) only when the spend itself leaves no room for it.

A job's maximum cost is its estimated input tokens plus ``max_tokens`` (or the default output
allowance, :data:`workers.calls.tokens.DEFAULT_OUTPUT_TOKENS`, when unset) at the dearest deployment
of its route.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from broker.config import OnBudgetExhausted, RouteConfig, TenantConfig
from schemas.jobs import JobRequest
from workers.admission import budget_alerts
from workers.admission.periods import period_end, period_key
from workers.admission.quotas import Clock, Wait
from workers.calls import tokens
from workers.calls.routing import Router
from workers.ledger.database.models import from_nano, to_nano
from workers.ledger.database.transactions import Transact
from workers.ledger.quota_rows import BudgetLedger, Hold, account_period
from workers.providers.base import WireMessages

DEFER_HOP_S = 300.0  # a deferred job looks again at least this often (a raised budget applies)
HOLDS_WAIT_S = 0.1  # how soon a job kept out only by running jobs' holds looks again


@dataclass(frozen=True, slots=True)
class OverBudget:
    """No room for the job's maximum cost: reject, or wait ``retry_s`` and look again."""

    message: str
    park: bool  # on_budget_exhausted = "defer": park the job until the next period
    retry_s: float


class Budgets:
    def __init__(
        self,
        router: Router,
        run: Transact,
        owner: str,
        lease_s: float,
        clock: Clock,
    ) -> None:
        self._router = router
        self._run = run
        self._owner = owner
        self._lease_s = lease_s
        self._clock = clock
        self._ledger = BudgetLedger()

    def max_cost_usd(
        self, job: JobRequest, route: RouteConfig, messages: WireMessages | None
    ) -> float:
        raw = tokens.input_tokens(messages, job.inputs)
        return max(self._router.estimated_cost(d, job, raw) for d in route.deployments)

    async def reserve(
        self,
        job: JobRequest,
        tenant: TenantConfig,
        route: RouteConfig,
        messages: WireMessages | None,
        account: str | None = None,
    ) -> Hold | OverBudget | Wait:
        """``account``: whose budget the job counts against (its tenant's by default)."""
        assert tenant.budget_usd is not None
        now = self._clock()
        at = datetime.fromtimestamp(now, UTC)
        hold = Hold(
            job.tenant,
            job.job_id,
            f"{account or job.tenant}/{period_key(tenant.budget_period, at)}",
            max(1, to_nano(self.max_cost_usd(job, route, messages))),
        )
        limit = to_nano(tenant.budget_usd)
        reserved = await self._run(
            lambda conn: self._ledger.reserve(
                conn, hold, limit, self._owner, now, now + self._lease_s
            )
        )
        if reserved.ok:
            return hold
        if reserved.spent_nusd + hold.amount_nusd <= limit:
            # only running jobs' holds stand in the way: their actual costs may leave room
            return Wait(HOLDS_WAIT_S, "budget", HOLDS_WAIT_S)
        end = period_end(tenant.budget_period, at)
        retry_s = DEFER_HOP_S if end is None else min(DEFER_HOP_S, end.timestamp() - now)
        message = (
            f"budget: {tenant.budget_usd:.2f} USD per {tenant.budget_period.value} would be "
            f"exceeded (spent {from_nano(reserved.spent_nusd):.6f}, held by running jobs "
            f"{from_nano(reserved.held_nusd):.6f}, this job up to "
            f"{from_nano(hold.amount_nusd):.6f})"
        )
        park = tenant.on_budget_exhausted is OnBudgetExhausted.DEFER
        account_name, period = account_period(hold.period, hold.tenant)
        exhausted = budget_alerts.alert(
            account_name, period, "budget_exhausted", from_nano(reserved.spent_nusd),
            tenant.budget_usd, at,
        )  # fmt: skip
        await self._run(lambda conn: budget_alerts.insert_alerts(conn, [exhausted], now))
        return OverBudget(message, park, max(retry_s, 1.0))

    async def drop(self, hold: Hold) -> None:
        """The job ends without a finish that settles it (parked, finished elsewhere)."""
        await self._run(lambda conn: self._ledger.drop(conn, hold.tenant, hold.job_id, self._owner))
