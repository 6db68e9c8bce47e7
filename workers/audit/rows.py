"""The audit trail's SQL: records written with the results they describe, read by ``headway
audit``, deleted only by the pruner past their retention.

Records are inserted in the transaction that stores the results (``LedgerRepository``), for
the results stored there and no others — so a job has an audit record for each terminal result
stored, and a finish that lost to another finisher adds none. Nothing here updates a row (a
trigger refuses it, migration 0015).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from workers.ledger.database.models import AuditCaptureRow, AuditRow
from workers.ledger.database.statements import dialect_insert, statements
from workers.ledger.database.transactions import Connection
from workers.ledger.records import AuditEntry, Finish


def _record(finish: Finish, audit: AuditEntry) -> tuple[Any, ...]:
    """The values of AUDIT_COLUMNS, in order."""
    return (
        finish.tenant,
        finish.completed_at,
        finish.job_id,
        audit.submitted_at,
        finish.batch_id,
        finish.kind,
        finish.route,
        audit.template,
        audit.template_version,
        finish.provider,
        finish.deployment,
        audit.region,
        audit.signed_by,
        audit.guardrails,
        finish.status.value,
        audit.error_code,
        finish.attempts,
        finish.input_tokens,
        finish.output_tokens,
        finish.cost_nusd,
        audit.request_sha256,
        audit.result_sha256,
        audit.capture,
    )


async def insert(conn: Connection, finishes: Sequence[Finish]) -> None:
    """The audit records (and captures) of stored finishes: driver SQL, one executemany (the
    hot path: ``workers/ledger/database/statements.py``)."""
    records = [_record(f, f.audit) for f in finishes if f.audit is not None]
    if not records:
        return
    await conn.exec_driver_sql(statements(conn.dialect.name).audit_insert, records)
    captured = [
        {
            "tenant": f.tenant,
            "job_id": f.job_id,
            "completed_at": f.completed_at,
            "prompt": f.audit.prompt_text,
            "output": f.audit.output_text,
        }
        for f in finishes
        if f.audit is not None and f.audit.capture != "digest"
    ]
    if captured:
        insert_ = dialect_insert(conn)(AuditCaptureRow).on_conflict_do_nothing()
        await conn.execute(insert_, captured)


async def read(
    engine: AsyncEngine,
    tenant: str,
    since: float | None = None,
    job_id: str | None = None,
    limit: int = 10_000,
) -> list[dict[str, Any]]:
    """A tenant's audit records, oldest first, with their captures when kept."""
    columns = list(AuditRow.__table__.columns)
    statement = select(
        *columns,
        AuditCaptureRow.prompt.label("captured_prompt"),
        AuditCaptureRow.output.label("captured_output"),
    ).outerjoin(
        AuditCaptureRow,
        (AuditCaptureRow.tenant == AuditRow.tenant)
        & (AuditCaptureRow.job_id == AuditRow.job_id)
        & (AuditCaptureRow.completed_at == AuditRow.completed_at),
    )
    statement = statement.where(AuditRow.tenant == tenant)
    if since is not None:
        statement = statement.where(AuditRow.completed_at >= since)
    if job_id is not None:
        statement = statement.where(AuditRow.job_id == job_id)
    statement = statement.order_by(AuditRow.completed_at, AuditRow.job_id).limit(limit)
    async with engine.connect() as conn:
        found = [dict(row._mapping) for row in await conn.execute(statement)]
    return found


def records_due(before: float) -> ColumnElement[bool]:
    return AuditRow.completed_at < before


def captures_due(before: float) -> ColumnElement[bool]:
    return AuditCaptureRow.completed_at < before


#: the tenants with audit records, one index seek each (a loose index scan: neither database
#: skips through an index's distinct leading values by itself)
TENANTS = text(
    "WITH RECURSIVE t(tenant) AS ("
    " SELECT MIN(tenant) FROM audit_records"
    " UNION ALL"
    " SELECT (SELECT MIN(tenant) FROM audit_records WHERE tenant > t.tenant) FROM t"
    " WHERE t.tenant IS NOT NULL"
    ") SELECT tenant FROM t WHERE tenant IS NOT NULL"
)


async def delete_records(conn: Connection, before: float, limit: int) -> int:
    """Delete up to ``limit`` audit records completed before ``before``: tenant by tenant,
    each a range of the key (the table has no index on the time alone: one less to write
    per job)."""
    done = 0
    for (tenant,) in (await conn.execute(TENANTS)).all():
        if done >= limit:
            break
        chosen = (
            select(AuditRow.completed_at, AuditRow.job_id)
            .where(AuditRow.tenant == tenant, AuditRow.completed_at < before)
            .order_by(AuditRow.completed_at)
            .limit(limit - done)
        )
        keys = [tuple(row) for row in await conn.execute(chosen)]
        if keys:
            key = tuple_(AuditRow.completed_at, AuditRow.job_id)
            await conn.execute(delete(AuditRow).where(AuditRow.tenant == tenant, key.in_(keys)))
            done += len(keys)
    return done


async def delete_captures(conn: Connection, before: float, limit: int) -> int:
    """Delete up to ``limit`` captures of jobs completed before ``before`` (by their
    time index: captures are few)."""
    table = AuditCaptureRow
    chosen = (
        select(table.tenant, table.completed_at, table.job_id)
        .where(table.completed_at < before)
        .order_by(table.completed_at)
        .limit(limit)
    )
    keys = [tuple(row) for row in await conn.execute(chosen)]
    if not keys:
        return 0
    key = tuple_(table.tenant, table.completed_at, table.job_id)
    await conn.execute(delete(table).where(key.in_(keys)))
    return len(keys)
