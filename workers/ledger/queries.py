"""Read-only ledger queries behind ``headway results``, ``status`` and ``usage``.

A batch id is a producer's choice, so two tenants may share one: the commands read a batch as
one tenant's (:func:`batch_tenants` tells whose a batch id is when none is named)."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Integer, cast, func, literal_column, select, union
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workers.ledger.batch_lane_rows import BATCH_OWNER
from workers.ledger.database.models import (
    BudgetRow,
    FinishedJobRow,
    JobRow,
    RowStatus,
    SpilledJobRow,
    UsageDailyRow,
    UsageRow,
    from_nano,
)
from workers.ledger.quota_rows import BATCH_ACCOUNT, TOTAL, batch_account, batch_of
from workers.ledger.records import Key
from workers.ledger.retention import finished_rows
from workers.ledger.retention.steps import utc_day
from workers.ledger.spill_rows import queued_statement

KNOWN_CHUNK = 500  # job ids asked of the ledger in one statement


@dataclass(frozen=True)
class BatchCap:
    """A batch's budget: its cap, what its capped jobs spent, and who set it (job, operator)."""

    tenant: str
    budget_usd: float
    spent_usd: float
    source: str


@dataclass
class BatchStatus:
    batch_id: str
    by_status: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    in_batch_lane: int = 0  # running jobs waiting for (or in) a provider batch
    queued: int = 0  # spilled jobs waiting in the ledger, not started yet
    in_lanes: int = 0  # jobs in the lanes (unread, or buffered by a worker), not started yet
    caps: list[BatchCap] = field(default_factory=list)  # the batch's budget, per tenant

    @property
    def total(self) -> int:
        """Jobs started or finished, and queued (in the ledger and in the lanes)."""
        return sum(self.by_status.values()) + self.queued + self.in_lanes

    @property
    def finished(self) -> int:
        return sum(self.by_status.values()) - self.by_status.get(RowStatus.RUNNING.value, 0)


@dataclass(frozen=True)
class UsageLine:
    tenant: str
    group: str  # the route, batch, deployment, day or tag value the line sums
    events: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


#: what ``headway usage --by`` groups a tenant's spend by (or ``tag:KEY``)
USAGE_GROUPS = ("route", "batch", "deployment", "day")
NO_VALUE = "(none)"
DAY_S = 86_400


async def batch_tenants(engine: AsyncEngine, batch_id: str) -> list[str]:
    """The tenants with jobs in the batch (started, finished, moved or spilled) or a cap on
    it, sorted: one index range per table (``(batch_id, tenant)`` indexes)."""
    statement = union(
        *(
            select(table.tenant).where(table.batch_id == batch_id).distinct()
            for table in (JobRow, FinishedJobRow, SpilledJobRow)
        )
    )
    async with engine.connect() as conn:
        found = {tenant for (tenant,) in await conn.execute(statement)}
        found.update(cap.tenant for cap in await _caps(conn, batch_id, None))
    return sorted(found)


async def batch_status(
    engine: AsyncEngine,
    batch_id: str,
    tenant: str | None = None,
    in_lanes: Collection[Key] = (),
) -> BatchStatus:
    """A batch's jobs by status, its spend, and its queued jobs: spilled ones, and of
    ``in_lanes`` (the batch's jobs found in the lanes, :mod:`workers.intake.backlog`) those
    the ledger has no row of."""
    statements = []
    for table in (JobRow, FinishedJobRow):  # finished jobs past the results window moved
        statement = (
            select(
                table.status,
                func.count(),
                func.coalesce(func.sum(table.cost_nusd), 0),
                func.coalesce(func.sum(table.input_tokens), 0),
                func.coalesce(func.sum(table.output_tokens), 0),
            )
            .where(table.batch_id == batch_id)
            .group_by(table.status)
        )
        if tenant is not None:
            statement = statement.where(table.tenant == tenant)
        statements.append(statement)
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
        if conn.dialect.name == "postgresql":  # one snapshot: a job is counted once, wherever
            await conn.execution_options(isolation_level="REPEATABLE READ")  # (SQLite's is one)
        for statement in statements:
            for name, count, cost, tokens_in, tokens_out in await conn.execute(statement):
                status.by_status[name] = status.by_status.get(name, 0) + int(count)
                status.cost_usd += from_nano(int(cost))
                status.input_tokens += int(tokens_in)
                status.output_tokens += int(tokens_out)
        status.in_batch_lane = int(await conn.scalar(lane) or 0)
        status.queued = int(await conn.scalar(queued) or 0)
        status.in_lanes = len(in_lanes) - len(await _known(conn, batch_id, in_lanes))
        status.caps = await _caps(conn, batch_id, tenant)
    return status


async def _caps(conn: AsyncConnection, batch_id: str, tenant: str | None) -> list[BatchCap]:
    """The batch's budget rows (``batch:<tenant>/<batch id>``, period ``total``)."""
    account = BudgetRow.tenant
    where = (
        account == batch_account(tenant, batch_id)
        if tenant is not None
        else account.startswith(BATCH_ACCOUNT, autoescape=True)
        & account.endswith(f"/{batch_id}", autoescape=True)
    )
    rows = await conn.execute(
        select(account, BudgetRow.spent_nusd, BudgetRow.limit_nusd, BudgetRow.limit_source)
        .where(where, BudgetRow.period == TOTAL, BudgetRow.limit_nusd.is_not(None))
        .order_by(account)
    )
    caps = []
    for name, spent, limit, source in rows:
        owner, batch = batch_of(name)
        if batch == batch_id and limit is not None:  # not another tenant's ".../x/<batch id>"
            caps.append(BatchCap(owner, from_nano(limit), from_nano(spent), source or "job"))
    return caps


async def _known(conn: AsyncConnection, batch_id: str, jobs: Collection[Key]) -> set[Key]:
    """Which of ``jobs`` the ledger has a row of: started (or finished, moved or not), or
    spilled."""
    by_tenant: dict[str, list[str]] = {}
    for tenant, job_id in jobs:
        by_tenant.setdefault(tenant, []).append(job_id)
    known: set[Key] = set()
    for tenant, ids in sorted(by_tenant.items()):
        for at in range(0, len(ids), KNOWN_CHUNK):
            chunk = ids[at : at + KNOWN_CHUNK]
            started = select(JobRow.tenant, JobRow.job_id).where(
                JobRow.tenant == tenant, JobRow.job_id.in_(chunk)
            )
            moved = select(FinishedJobRow.tenant, FinishedJobRow.job_id).where(
                FinishedJobRow.tenant == tenant, FinishedJobRow.job_id.in_(chunk)
            )
            spilled = select(SpilledJobRow.tenant, SpilledJobRow.job_id).where(
                SpilledJobRow.batch_id == batch_id,
                SpilledJobRow.tenant == tenant,
                SpilledJobRow.job_id.in_(chunk),
            )
            for statement in (started, moved, spilled):
                known.update((t, j) for t, j in await conn.execute(statement))
    return known


async def batch_results(
    engine: AsyncEngine, batch_id: str, tenant: str, after: float = 0.0
) -> list[tuple[float, tuple[str, str], str]]:
    """(completed_at, (tenant, job_id), result JSON) of the finished jobs of a tenant's batch,
    completed after ``after``, oldest first. A job whose row moved (past the results window)
    is there with the result built from what was kept: ``output_expired``, no output."""
    statement = (
        select(JobRow.completed_at, JobRow.tenant, JobRow.job_id, JobRow.result_json)
        .where(
            JobRow.batch_id == batch_id,
            JobRow.tenant == tenant,
            JobRow.status != RowStatus.RUNNING.value,
            JobRow.completed_at > after,
        )
        .order_by(JobRow.completed_at)
    )
    async with engine.connect() as conn:
        found = [
            (float(at or 0.0), (who, job_id), text)
            for at, who, job_id, text in await conn.execute(statement)
            if text
        ]
        for kept in await finished_rows.in_batch(conn, batch_id, tenant, after):
            text = finished_rows.expired_result(kept)
            found.append((kept.completed_at, (kept.tenant, kept.job_id), text))
    found.sort(key=lambda line: line[0])
    return found


async def usage_summary(
    engine: AsyncEngine, tenant: str | None = None, since: float | None = None, by: str = "route"
) -> list[UsageLine]:
    """Spend and tokens per tenant and ``by`` (a route, batch, deployment, UTC day, or
    ``tag:KEY``'s value): usage events, and the daily sums of those past their window
    (``since`` counts a summed day whole when it falls on or after since's day)."""
    tag = by.removeprefix("tag:") if by.startswith("tag:") else None
    if tag is None and by not in USAGE_GROUPS:
        raise ValueError(f"by: one of {USAGE_GROUPS} or tag:KEY, not {by!r}")
    grouped = "tags" if tag is not None else by
    events = select(
        UsageRow.tenant,
        _event_group(grouped, engine.dialect.name),
        func.count(),
        func.sum(UsageRow.input_tokens),
        func.sum(UsageRow.output_tokens),
        func.sum(UsageRow.cost_nusd),
    ).group_by(UsageRow.tenant, _event_group(grouped, engine.dialect.name))
    days = select(
        UsageDailyRow.tenant,
        _daily_group(grouped),
        func.sum(UsageDailyRow.events),
        func.sum(UsageDailyRow.input_tokens),
        func.sum(UsageDailyRow.output_tokens),
        func.sum(UsageDailyRow.cost_nusd),
    ).group_by(UsageDailyRow.tenant, _daily_group(grouped))
    if tenant is not None:
        events = events.where(UsageRow.tenant == tenant)
        days = days.where(UsageDailyRow.tenant == tenant)
    if since is not None:
        events = events.where(UsageRow.timestamp >= since)
        days = days.where(UsageDailyRow.day >= utc_day(since))
    totals: dict[tuple[str, str], list[int]] = {}
    async with engine.connect() as conn:
        for statement in (events, days):
            for t, value, n, i, o, c in await conn.execute(statement):
                key = (t, _group_value(grouped, value, tag))
                sums = totals.setdefault(key, [0, 0, 0, 0])
                for at, count in enumerate((n, i, o, c)):
                    sums[at] += int(count or 0)
    return [
        UsageLine(t, g, n, i, o, from_nano(c)) for (t, g), (n, i, o, c) in sorted(totals.items())
    ]


def _event_group(by: str, dialect: str) -> ColumnElement[Any]:
    if by == "day":  # the UTC day's number; a day's name is made in Python
        # a literal, not a parameter: the same expression in SELECT and GROUP BY
        day_s: ColumnElement[Any] = literal_column(str(DAY_S))
        if dialect == "postgresql":
            return func.floor(UsageRow.timestamp / day_s)
        return cast(UsageRow.timestamp / day_s, Integer)  # SQLite truncates: the floor here
    found: ColumnElement[Any] = getattr(UsageRow, {"batch": "batch_id"}.get(by, by))
    return found


def _daily_group(by: str) -> ColumnElement[Any]:
    found: ColumnElement[Any] = getattr(UsageDailyRow, {"batch": "batch_id"}.get(by, by))
    return found


def _group_value(by: str, value: Any, tag: str | None) -> str:
    if tag is not None:  # canonical JSON of the event's tags ('' or NULL: none)
        found = json.loads(value).get(tag) if value else None
        return found if isinstance(found, str) else NO_VALUE
    if by == "day" and not isinstance(value, str):
        return utc_day(int(value) * DAY_S)
    return str(value) if value else NO_VALUE


async def tenant_spend_usd(engine: AsyncEngine, tenant: str) -> float:
    """The tenant's spend: the sum over its distinct usage events (and their daily sums)."""
    async with engine.connect() as conn:
        events = await conn.scalar(
            select(func.coalesce(func.sum(UsageRow.cost_nusd), 0)).where(UsageRow.tenant == tenant)
        )
        days = await conn.scalar(
            select(func.coalesce(func.sum(UsageDailyRow.cost_nusd), 0)).where(
                UsageDailyRow.tenant == tenant
            )
        )
    return from_nano(int(events or 0) + int(days or 0))
