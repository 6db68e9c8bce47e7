"""Read-only ledger queries behind ``headway results``, ``status`` and ``usage``."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from workers.ledger.batch_lane_rows import BATCH_OWNER
from workers.ledger.database.models import (
    JobRow,
    RowStatus,
    UsageRow,
    from_nano,
)
from workers.ledger.spill_rows import queued_statement


@dataclass
class BatchStatus:
    batch_id: str
    by_status: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    in_batch_lane: int = 0  # running jobs waiting for (or in) a provider batch
    queued: int = 0  # spilled jobs waiting in the ledger, not started yet

    @property
    def total(self) -> int:
        """Jobs the ledger knows of: started or finished, and queued in it."""
        return sum(self.by_status.values()) + self.queued

    @property
    def finished(self) -> int:
        return self.total - self.queued - self.by_status.get(RowStatus.RUNNING.value, 0)


@dataclass(frozen=True)
class UsageLine:
    tenant: str
    route: str
    events: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


async def batch_status(
    engine: AsyncEngine, batch_id: str, tenant: str | None = None
) -> BatchStatus:
    statement = (
        select(
            JobRow.status,
            func.count(),
            func.coalesce(func.sum(JobRow.cost_nusd), 0),
            func.coalesce(func.sum(JobRow.input_tokens), 0),
            func.coalesce(func.sum(JobRow.output_tokens), 0),
        )
        .where(JobRow.batch_id == batch_id)
        .group_by(JobRow.status)
    )
    if tenant is not None:
        statement = statement.where(JobRow.tenant == tenant)
    lane = select(func.count()).where(
        JobRow.batch_id == batch_id,
        JobRow.status == RowStatus.RUNNING.value,
        JobRow.lease_owner == BATCH_OWNER,
    )
    if tenant is not None:
        lane = lane.where(JobRow.tenant == tenant)
    queued = queued_statement(batch_id, tenant)
    status = BatchStatus(batch_id)
    async with engine.connect() as conn:
        for name, count, cost, tokens_in, tokens_out in await conn.execute(statement):
            status.by_status[name] = int(count)
            status.cost_usd += from_nano(int(cost))
            status.input_tokens += int(tokens_in)
            status.output_tokens += int(tokens_out)
        status.in_batch_lane = int(await conn.scalar(lane) or 0)
        status.queued = int(await conn.scalar(queued) or 0)
    return status


async def batch_results(
    engine: AsyncEngine, batch_id: str, tenant: str | None = None, after: float = 0.0
) -> list[tuple[float, tuple[str, str], str]]:
    """(completed_at, (tenant, job_id), result JSON) of the finished jobs of a batch,
    completed after ``after``, oldest first."""
    statement = (
        select(JobRow.completed_at, JobRow.tenant, JobRow.job_id, JobRow.result_json)
        .where(
            JobRow.batch_id == batch_id,
            JobRow.status != RowStatus.RUNNING.value,
            JobRow.completed_at > after,
        )
        .order_by(JobRow.completed_at)
    )
    if tenant is not None:
        statement = statement.where(JobRow.tenant == tenant)
    async with engine.connect() as conn:
        return [
            (float(at or 0.0), (who, job_id), text)
            for at, who, job_id, text in await conn.execute(statement)
            if text
        ]


async def usage_summary(
    engine: AsyncEngine, tenant: str | None = None, since: float | None = None
) -> list[UsageLine]:
    statement = (
        select(
            UsageRow.tenant,
            UsageRow.route,
            func.count(),
            func.sum(UsageRow.input_tokens),
            func.sum(UsageRow.output_tokens),
            func.sum(UsageRow.cost_nusd),
        )
        .group_by(UsageRow.tenant, UsageRow.route)
        .order_by(UsageRow.tenant, UsageRow.route)
    )
    if tenant is not None:
        statement = statement.where(UsageRow.tenant == tenant)
    if since is not None:
        statement = statement.where(UsageRow.timestamp >= since)
    async with engine.connect() as conn:
        return [
            UsageLine(t, r, int(n), int(i), int(o), from_nano(int(c)))
            for t, r, n, i, o, c in await conn.execute(statement)
        ]


async def tenant_spend_usd(engine: AsyncEngine, tenant: str) -> float:
    """The tenant's spend: the sum over its distinct usage events."""
    async with engine.connect() as conn:
        total = await conn.scalar(
            select(func.coalesce(func.sum(UsageRow.cost_nusd), 0)).where(UsageRow.tenant == tenant)
        )
    return from_nano(int(total or 0))
