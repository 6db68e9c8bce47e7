"""Batch budgets: which tenants' batches have a cap, as every worker knows them.

A batch's cap lives on its budget row (``budgets``: account ``batch:<tenant>/<batch id>``,
period ``total``, ``limit_nusd``). The first job carrying ``batch_budget_usd`` sets it
(:meth:`workers.ledger.quota_rows.BudgetLedger.reserve`); ``headway budget set --tenant T
--batch B --usd X`` publishes a ``set_budget`` ControlCommand that every worker stores here
(:meth:`BatchCaps.set`, through the control follower) — the later ``at`` wins, whatever order
workers read two sets in. A cap set on a batch already running starts from the batch's spend
so far (its jobs' stored costs); jobs running at that moment are not counted in it.

Each worker keeps the capped batches it has seen in memory (:meth:`capped`, read for each job of
a batch: a job of an uncapped batch pays nothing), and reloads the caps stored or touched since
its last look every refresh (:meth:`refresh`) — so jobs of a batch whose cap an earlier job
set, or another worker stored, count against it within about that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, or_, select, union_all

from schemas.control import ControlCommand
from workers.ledger.database.models import BudgetRow, FinishedJobRow, JobRow, to_nano
from workers.ledger.database.statements import dialect_insert
from workers.ledger.database.transactions import Connection, Transact
from workers.ledger.quota_rows import TOTAL, batch_account, batch_of, capped_batches

CLOCK_SLACK_S = 5.0  # re-read this far back: workers' clocks and commits are not instant
REMEMBERED_S = 30 * 86_400.0  # a starting worker learns the caps of batches used this recently


async def _spent_so_far(conn: Connection, tenant: str, batch_id: str) -> int:
    """The stored cost of the batch's jobs (finished, or moved past the results window)."""
    parts = [
        select(func.coalesce(func.sum(table.cost_nusd), 0).label("cost")).where(
            table.tenant == tenant, table.batch_id == batch_id
        )
        for table in (JobRow, FinishedJobRow)
    ]
    costs = await conn.execute(union_all(*parts))
    return sum(int(cost) for (cost,) in costs)


async def store_cap(
    conn: Connection, tenant: str, batch_id: str, usd: float, at: datetime, now: float
) -> None:
    """An operator's cap: stored unless a later one already is."""
    limit, set_at = to_nano(usd), at.timestamp()
    spent = await _spent_so_far(conn, tenant, batch_id)
    insert = dialect_insert(conn)(BudgetRow).values(
        tenant=batch_account(tenant, batch_id),
        period=TOTAL,
        spent_nusd=spent,
        updated_at=now,
        limit_nusd=limit,
        limit_source="operator",
        limit_set_at=set_at,
    )
    await conn.execute(
        insert.on_conflict_do_update(
            index_elements=["tenant", "period"],
            set_={
                "limit_nusd": limit,
                "limit_source": "operator",
                "limit_set_at": set_at,
                "updated_at": now,
            },
            where=or_(BudgetRow.limit_set_at.is_(None), BudgetRow.limit_set_at < set_at),
        )
    )


async def _capped_since(conn: Connection, since: float) -> list[str]:
    rows = await conn.execute(select(BudgetRow.tenant).where(*capped_batches(since)))
    return [account for (account,) in rows]


class BatchCaps:
    def __init__(self, run: Transact, clock: Callable[[], float] = time.time) -> None:
        self._run = run
        self._clock = clock
        self._capped: set[tuple[str, str]] = set()
        self._seen_up_to = 0.0

    def capped(self, tenant: str, batch_id: str) -> bool:
        return (tenant, batch_id) in self._capped

    async def set(self, command: ControlCommand) -> None:
        """Store a ``set_budget`` command (idempotent) and apply it here at once."""
        assert command.batch_id is not None and command.budget_usd is not None
        assert command.at is not None  # the model guarantees all three
        tenant, batch_id, usd, at = command.tenant, command.batch_id, command.budget_usd, command.at
        now = self._clock()
        await self._run(lambda conn: store_cap(conn, tenant, batch_id, usd, at, now))
        self._capped.add((tenant, batch_id))

    async def refresh(self) -> None:
        """Learn the caps stored, or used, since the last look (by any worker)."""
        now = self._clock()
        since = max(self._seen_up_to - CLOCK_SLACK_S, now - REMEMBERED_S)
        accounts = await self._run(lambda conn: _capped_since(conn, since))
        self._capped.update(batch_of(account) for account in accounts)
        self._seen_up_to = now
