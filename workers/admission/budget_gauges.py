"""Budget spent and remaining per tenant and team, as gauges a scrape reads from memory — and,
from the same reading, the budget alerts (``budget_alerts.py``) of tenants, teams and capped
batches.

Every budget's spend in its current period is read from the ledger every
``HEADWAY_BUDGET_GAUGES_S`` (two small queries over every worker's spend: the ``budgets`` rows),
so ``/metrics`` shows ``headway_budget_spent_usd`` and ``headway_budget_remaining_usd``
(``tenant``-labelled) and ``headway_team_budget_spent_usd`` / ``..._remaining_usd``
(``team``) without a database read per scrape. Batches get alerts, not gauges (a label per
batch would grow without bound). Holds of running jobs are not counted: remaining is the
budget less what was spent.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from sqlalchemy import select, tuple_

from broker.config import HeadwayConfig
from workers.admission.budget_alerts import AlertPublisher, Spend
from workers.admission.periods import period_key
from workers.admission.quotas import Clock
from workers.ledger.database.models import BudgetRow, from_nano
from workers.ledger.database.transactions import Connection, Transact
from workers.ledger.quota_rows import TOTAL, batch_of, capped_batches, team_account

log = logging.getLogger(__name__)

REFRESH_S = 15.0
BATCH_ACTIVE_S = 2 * 86_400.0  # a capped batch's alerts are noticed while it runs, and a day on


class BudgetGauges:
    def __init__(
        self,
        config: HeadwayConfig,
        run: Transact,
        clock: Clock,
        alerts: AlertPublisher | None = None,  # notices and publishes budget alerts
    ) -> None:
        self._config = config
        self._run = run
        self._clock = clock
        self._alerts = alerts
        self._spends: list[Spend] = []

    def _budgeted(self, now: datetime) -> dict[tuple[str, str], tuple[str, str, float]]:
        """(scope, name) → its budget row's account, current period key, and budget."""
        found = {
            ("tenant", name): (
                self._config.account(name),
                period_key(tenant.budget_period, now),
                budget,
            )
            for name, tenant in self._config.tenants.items()
            if (budget := tenant.budget_usd) is not None
        }
        for name, team in self._config.teams.items():
            found[("team", name)] = (
                team_account(name),
                period_key(team.budget_period, now),
                team.budget_usd,
            )
        return found

    async def refresh(self) -> None:
        """Read each budget's spend in its current period: the config's (tenants', teams'),
        and the capped batches' touched in the last :data:`BATCH_ACTIVE_S`."""
        at = self._clock()
        now = datetime.fromtimestamp(at, UTC)
        budgeted = self._budgeted(now)
        keys = sorted({(account, period) for account, period, _ in budgeted.values()})

        async def read(conn: Connection) -> tuple[dict[tuple[str, str], int], list[Spend]]:
            spent: dict[tuple[str, str], int] = {}
            if keys:
                rows = await conn.execute(
                    select(BudgetRow.tenant, BudgetRow.period, BudgetRow.spent_nusd).where(
                        tuple_(BudgetRow.tenant, BudgetRow.period).in_(keys)
                    )
                )
                spent = {(account, period): int(used) for account, period, used in rows}
            batches = await conn.execute(
                select(BudgetRow.tenant, BudgetRow.spent_nusd, BudgetRow.limit_nusd).where(
                    *capped_batches(at - BATCH_ACTIVE_S)
                )
            )
            capped = [
                Spend("/".join(batch_of(account)), TOTAL, from_nano(int(limit)),
                      from_nano(int(used)), "batch")
                for account, used, limit in batches
                if limit is not None
            ]  # fmt: skip
            return spent, capped

        spent, capped = await self._run(read)
        self._spends = [
            Spend(name, period, budget, from_nano(spent.get((account, period), 0)), scope)
            for (scope, name), (account, period, budget) in budgeted.items()
        ] + capped

    def spent(self, scope: str = "tenant") -> dict[str, float]:
        return {s.name: s.spent_usd for s in self._spends if s.scope == scope}

    def remaining(self, scope: str = "tenant") -> dict[str, float]:
        return {
            s.name: max(0.0, s.budget_usd - s.spent_usd) for s in self._spends if s.scope == scope
        }

    async def run_forever(self, every_s: float = REFRESH_S) -> None:
        while True:
            try:
                await self.refresh()
                if self._alerts is not None:
                    await self._alerts.notice(self._spends)
                    await self._alerts.publish_pending()
            except Exception as error:  # the ledger's outage is reported elsewhere
                log.warning("budget gauges or alerts not refreshed: %s", error)
            await asyncio.sleep(every_s)
