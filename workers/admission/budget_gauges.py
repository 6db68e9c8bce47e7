"""Budget spent and remaining per tenant, as gauges a scrape reads from memory — and, from the
same reading, the budget alerts (``budget_alerts.py``).

Every budgeted tenant's spend in its current period is read from the ledger every
``HEADWAY_BUDGET_GAUGES_S`` (one small query over every worker's spend: the ``budgets`` rows), so
``/metrics`` shows ``headway_budget_spent_usd`` and ``headway_budget_remaining_usd``
(``tenant``-labelled) without a database read per scrape. Holds of running jobs are not
counted: remaining is the budget less what was spent.
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

log = logging.getLogger(__name__)

REFRESH_S = 15.0


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

    async def refresh(self) -> None:
        """Read each budgeted tenant's spend in its current period."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        budgeted = {  # tenant → its account, current period key, budget
            name: (self._config.account(name), period_key(tenant.budget_period, now), budget)
            for name, tenant in self._config.tenants.items()
            if (budget := tenant.budget_usd) is not None
        }
        if not budgeted:
            return
        keys = sorted({(account, period) for account, period, _ in budgeted.values()})

        async def read(conn: Connection) -> dict[tuple[str, str], int]:
            rows = await conn.execute(
                select(BudgetRow.tenant, BudgetRow.period, BudgetRow.spent_nusd).where(
                    tuple_(BudgetRow.tenant, BudgetRow.period).in_(keys)
                )
            )
            return {(account, period): int(spent) for account, period, spent in rows}

        spent = await self._run(read)
        self._spends = [
            Spend(name, period, budget, from_nano(spent.get((account, period), 0)))
            for name, (account, period, budget) in budgeted.items()
        ]

    def spent(self) -> dict[str, float]:
        return {s.tenant: s.spent_usd for s in self._spends}

    def remaining(self) -> dict[str, float]:
        return {s.tenant: max(0.0, s.budget_usd - s.spent_usd) for s in self._spends}

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
