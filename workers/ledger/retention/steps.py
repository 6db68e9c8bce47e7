"""Retention: the steps that keep the ledger small, each a bounded batch in one transaction.

A finished job's row leaves ``jobs`` after the results window: :func:`move_finished` deletes
it there and inserts what deduplication, ``status --batch`` and a redelivered job still need
into ``finished_jobs`` — no result body — in completion order, so those rows stay dense
(docs/architecture.md, "a ledger that stays small", measured why the row moves rather than
being compacted in place). :func:`roll_up_usage` sums usage events past their window into
``usage_daily`` and deletes them; :func:`delete_finished` and :func:`delete_usage_days` end
what is past the lanes' retention and the usage history's. :func:`take_lease` lets one worker
at a time run them (:mod:`workers.ledger.pruning` drives the steps).

Each step takes the oldest rows first (by an index on their time) and at most ``limit`` of
them, and returns how many it handled: its caller repeats it until a step returns less.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import JSON, String, and_, case, cast, delete, func, insert, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from workers.ledger.database.models import (
    FinishedJobRow,
    JobRow,
    LedgerLeaseRow,
    RowStatus,
    UsageDailyRow,
    UsageRow,
)
from workers.ledger.database.statements import dialect_insert
from workers.ledger.database.transactions import Connection
from workers.ledger.records import Key
from workers.ledger.retention.finished_rows import COLUMNS, keys_in

RUNNING = RowStatus.RUNNING.value
Step = Callable[[Connection, float, int], Awaitable[int]]
SUCCEEDED = RowStatus.SUCCEEDED.value

#: the columns a finished job keeps once its row has moved, copied as they are (the error
#: code is read out of the result)
KEPT = tuple(column.key for column in COLUMNS if column.key != "error_code")


#: what a row of ``usage_daily`` sums over
DAY_KEY = ("day", "tenant", "route", "provider", "deployment", "batch_id", "tags_key")


def _error_code(conn: Connection) -> ColumnElement[Any]:
    """The stored result's ``error.code`` for a job that did not succeed (the result JSON of
    one that did — an embedding is ~30 KB — is not parsed)."""
    if conn.dialect.name == "postgresql":
        code: ColumnElement[Any] = cast(JobRow.result_json, JSON)["error"]["code"].as_string()
    else:
        code = func.json_extract(JobRow.result_json, "$.error.code")
    return case((JobRow.status != SUCCEEDED, cast(code, String(64))), else_=None)


def movable(before: float) -> ColumnElement[bool]:
    """Finished jobs completed before ``before``: what :func:`move_finished` moves."""
    return and_(JobRow.completed_at < before, JobRow.status != RUNNING)


def usage_due(before: float) -> ColumnElement[bool]:
    """Usage events recorded before ``before``: what :func:`roll_up_usage` sums."""
    return UsageRow.timestamp < before


def finished_due(before: float) -> ColumnElement[bool]:
    """Moved jobs completed before ``before``: what :func:`delete_finished` deletes."""
    return FinishedJobRow.completed_at < before


def days_due(before: float) -> ColumnElement[bool]:
    """Daily usage rows of days that ended before ``before``'s: what
    :func:`delete_usage_days` deletes."""
    return UsageDailyRow.day < utc_day(before)


async def move_finished(conn: Connection, before: float, limit: int) -> int:
    """Move up to ``limit`` finished jobs completed before ``before`` (oldest first) from
    ``jobs`` to ``finished_jobs``. A key already there (moved, then run again from a replay)
    takes the newer row."""
    chosen = (
        select(JobRow.tenant, JobRow.job_id)
        .where(movable(before))
        .order_by(JobRow.completed_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":  # a row a claim holds now is left for the next pass
        chosen = chosen.with_for_update(skip_locked=True)
    keys: list[Key] = [(tenant, job_id) for tenant, job_id in await conn.execute(chosen)]
    if not keys:
        return 0
    where = keys_in(keys, JobRow)
    await conn.execute(delete(FinishedJobRow).where(keys_in(keys)))
    columns = [getattr(JobRow, name) for name in KEPT]
    await conn.execute(
        insert(FinishedJobRow).from_select(
            [*KEPT, "error_code"],
            select(*columns, _error_code(conn)).where(where),
        )
    )
    await conn.execute(delete(JobRow).where(where))
    return len(keys)


async def roll_up_usage(conn: Connection, before: float, limit: int) -> int:
    """Sum up to ``limit`` usage events recorded before ``before`` (oldest first) into
    ``usage_daily`` and delete them."""
    chosen = (
        select(
            UsageRow.event_id,
            UsageRow.timestamp,
            UsageRow.tenant,
            UsageRow.route,
            UsageRow.provider,
            UsageRow.deployment,
            UsageRow.batch_id,
            UsageRow.input_tokens,
            UsageRow.output_tokens,
            UsageRow.cost_nusd,
            UsageRow.tags,
        )
        .where(usage_due(before))
        .order_by(UsageRow.timestamp)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        chosen = chosen.with_for_update(skip_locked=True)
    rows = (await conn.execute(chosen)).all()
    if not rows:
        return 0
    days: dict[tuple[str, ...], list[int]] = {}
    for row in rows:
        _, at, tenant, route, provider, deployment, batch_id, tokens_in, tokens_out, cost, tags = (
            row
        )
        key = (utc_day(at), tenant, route, provider, deployment, batch_id or "", tags or "")
        sums = days.setdefault(key, [0, 0, 0, 0])
        sums[0] += 1
        sums[1] += int(tokens_in)
        sums[2] += int(tokens_out)
        sums[3] += int(cost)
    table = UsageDailyRow.__table__
    upsert = dialect_insert(conn)
    for (day, tenant, route, provider, deployment, batch_id, tags), sums in sorted(days.items()):
        statement = upsert(table).values(
            day=day,
            tenant=tenant,
            route=route,
            provider=provider,
            deployment=deployment,
            batch_id=batch_id,
            tags_key=hashlib.sha256(tags.encode()).hexdigest() if tags else "",
            tags=tags or None,
            events=sums[0],
            input_tokens=sums[1],
            output_tokens=sums[2],
            cost_nusd=sums[3],
        )
        added = statement.excluded
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=[table.c[name] for name in DAY_KEY],
                set_={
                    name: table.c[name] + added[name]
                    for name in ("events", "input_tokens", "output_tokens", "cost_nusd")
                },
            )
        )
    ids = [row[0] for row in rows]
    await conn.execute(delete(UsageRow).where(UsageRow.event_id.in_(ids)))
    return len(rows)


async def delete_finished(conn: Connection, before: float, limit: int) -> int:
    """Delete up to ``limit`` moved jobs completed before ``before`` (past the lanes'
    retention: no record of theirs can be redelivered)."""
    chosen = (
        select(FinishedJobRow.tenant, FinishedJobRow.job_id)
        .where(finished_due(before))
        .order_by(FinishedJobRow.completed_at)
        .limit(limit)
    )
    keys = [(tenant, job_id) for tenant, job_id in await conn.execute(chosen)]
    if not keys:
        return 0
    await conn.execute(delete(FinishedJobRow).where(keys_in(keys)))
    return len(keys)


async def delete_usage_days(conn: Connection, before: float, limit: int) -> int:
    """Delete up to ``limit`` daily usage rows of days that ended before ``before``."""
    chosen = (
        select(UsageDailyRow.day).where(days_due(before)).order_by(UsageDailyRow.day).limit(limit)
    )
    days = sorted({day for (day,) in await conn.execute(chosen)})
    if not days:
        return 0
    result = await conn.execute(delete(UsageDailyRow).where(UsageDailyRow.day.in_(days)))
    return int(result.rowcount or 0)


#: each step, and which rows it is due to handle at a cutoff (a dry run counts them)
DUE: dict[Step, Callable[[float], ColumnElement[bool]]] = {
    move_finished: movable,
    roll_up_usage: usage_due,
    delete_finished: finished_due,
    delete_usage_days: days_due,
}


async def take_lease(conn: Connection, name: str, owner: str, now: float, until: float) -> bool:
    """Hold the lease ``name`` until ``until`` if it is free, lapsed or already ``owner``'s."""
    table = LedgerLeaseRow.__table__
    statement = dialect_insert(conn)(table).values(name=name, owner=owner, expires_at=until)
    taken = await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[table.c.name],
            set_={"owner": owner, "expires_at": until},
            where=or_(table.c.owner == owner, table.c.expires_at <= now),
        ).returning(table.c.owner)
    )
    return taken.first() is not None


async def release_lease(conn: Connection, name: str, owner: str) -> None:
    await conn.execute(
        update(LedgerLeaseRow)
        .where(LedgerLeaseRow.name == name, LedgerLeaseRow.owner == owner)
        .values(expires_at=0.0)
    )


def utc_day(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))
