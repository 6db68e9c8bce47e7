"""Batch budgets: a batch's cap is a ledger fact, stored here by operators' commands.

A batch's cap lives on its budget row (``budgets``: account ``batch:<tenant>/<batch id>``,
period ``total``, ``limit_nusd``), for the batch's whole life. The first job carrying
``batch_budget_usd`` sets it (:meth:`workers.ledger.quota_rows.BudgetLedger.reserve`);
``headway budget set --tenant T --batch B --usd X`` publishes a ``set_budget`` ControlCommand
that every worker stores here (:meth:`BatchCaps.set`, through the control follower) — the later
``at`` wins, whatever order workers read two sets in. A cap set on a batch already running
starts from the batch's spend so far (its jobs' stored costs); jobs running at that moment are
not counted in it.

No worker keeps caps in memory: every job of a batch reads its batch's row in the transaction
that reserves its cost (:class:`workers.admission.budgets.Budgets`), so a cap binds every job
whose reservation reads after the cap's transaction committed — the jobs right behind the job
that set it, on any worker, however long the batch was idle. A cache could not do that: a
"no cap" remembered by one worker is wrong the moment a job on another worker sets one, and
no invalidation reaches that worker before its next job. What it costs: a batch without a cap
pays one indexed read of a row that does not exist (no write, no lock); a capped batch's jobs
are held like any budget's. Measured in docs/tenancy.md.

Jobs that reach their reservation while a job of the same batch that may set its cap (one
carrying ``batch_budget_usd``) is reserving on the same worker wait for it
(:class:`SeedGates`): the database alone would let them read the row before that transaction
commits. Jobs reserved before the cap-setting job — another worker's, or read earlier from
another partition (Kafka orders records only within one) — are not held by it: to cap a batch
from its first job, give every job of the batch its ``batch_budget_usd``, or set the cap with
``headway budget set`` before submitting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, or_, select, union_all

from schemas.control import ControlCommand
from workers.ledger.database.models import BudgetRow, FinishedJobRow, JobRow, to_nano
from workers.ledger.database.statements import dialect_insert
from workers.ledger.database.transactions import Connection, Transact
from workers.ledger.quota_rows import TOTAL, batch_account


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


@dataclass
class _Seeding:
    running: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class SeedGates:
    """This worker's reservations that may set a batch's cap, while they run."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str], _Seeding] = {}

    @contextlib.asynccontextmanager
    async def reserving(self, tenant: str, batch_id: str, seeds: bool) -> AsyncIterator[None]:
        """Around a reservation of a job of the batch: one that ``seeds`` (carries a cap) is
        let through and counted; any other first waits for those running to end."""
        key = (tenant, batch_id)
        if not seeds:
            while (seeding := self._open.get(key)) is not None:
                await seeding.done.wait()
            yield
            return
        seeding = self._open.setdefault(key, _Seeding())
        seeding.running += 1
        try:
            yield
        finally:
            seeding.running -= 1
            if seeding.running == 0:
                del self._open[key]
                seeding.done.set()


class BatchCaps:
    def __init__(self, run: Transact, clock: Callable[[], float] = time.time) -> None:
        self._run = run
        self._clock = clock

    async def set(self, command: ControlCommand) -> None:
        """Store a ``set_budget`` command (idempotent): every worker's next job of the batch
        reads it."""
        assert command.batch_id is not None and command.budget_usd is not None
        assert command.at is not None  # the model guarantees all three
        tenant, batch_id, usd, at = command.tenant, command.batch_id, command.budget_usd, command.at
        now = self._clock()
        await self._run(lambda conn: store_cap(conn, tenant, batch_id, usd, at, now))
