"""Jobs whose rows moved to ``finished_jobs`` (:mod:`workers.ledger.retention.steps`), as the claim
and finish paths see them.

A key found here is a job that finished before the results window: a redelivered record of it
gets :func:`expired_result` — the stored status, usage and cost, no output, ``output_expired``
— and no usage events (they were published, and spend counted, when it ran). A replay from the
dead-letter topic of a moved failed or rejected job takes the row back (:func:`take_back`) and
runs again, its claim count continuing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, delete, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from schemas.results import JobError, JobResult, TokenUsage
from workers.ledger.database.models import FinishedJobRow, JobRow, from_nano
from workers.ledger.database.transactions import Connection
from workers.ledger.records import (
    AlreadyFinished,
    Claim,
    Claimed,
    ClaimOutcome,
    HeldElsewhere,
    Key,
)

EXPIRED_MESSAGE = (
    "the job finished before the ledger's results window (HEADWAY_RETAIN_RESULTS_H); its "
    "output is no longer kept — the result topic holds the original"
)


@dataclass(frozen=True, slots=True)
class Moved:
    """What is kept of a job whose row moved."""

    tenant: str
    job_id: str
    status: str
    error_code: str | None
    batch_id: str | None
    kind: str | None
    route: str | None
    provider: str | None
    deployment: str | None
    attempts: int
    claims: int
    input_tokens: int
    output_tokens: int
    cost_nusd: int
    completed_at: float


#: ``finished_jobs``' columns in :class:`Moved`'s order
COLUMNS = tuple(getattr(FinishedJobRow, kept.name) for kept in fields(Moved))


def keys_in(
    keys: Collection[Key], table: type[JobRow] | type[FinishedJobRow] = FinishedJobRow
) -> ColumnElement[bool]:
    """``(tenant, job_id) IN keys`` on ``table``, written per tenant: each arm is a
    primary-key lookup (a tuple IN is planned badly on a fresh table)."""
    tenants: dict[str, list[str]] = {}
    for tenant, job_id in keys:
        tenants.setdefault(tenant, []).append(job_id)
    return or_(
        *(
            and_(table.tenant == tenant, table.job_id.in_(sorted(ids)))
            for tenant, ids in sorted(tenants.items())
        )
    )


async def moved(conn: Connection, keys: Collection[Key]) -> dict[Key, Moved]:
    """Which of ``keys`` moved, and what is kept of them."""
    if not keys:
        return {}
    kept = await rows_of(conn, select(*COLUMNS).where(keys_in(keys)))
    return {(row.tenant, row.job_id): row for row in kept}


async def in_batch(
    conn: Connection, batch_id: str, tenant: str | None = None, after: float = 0.0
) -> list[Moved]:
    """What is kept of a batch's moved jobs completed after ``after``."""
    statement = select(*COLUMNS).where(
        FinishedJobRow.batch_id == batch_id, FinishedJobRow.completed_at > after
    )
    if tenant is not None:
        statement = statement.where(FinishedJobRow.tenant == tenant)
    return await rows_of(conn, statement)


async def rows_of(conn: Connection, statement: Select[Any]) -> list[Moved]:
    return [Moved(*row) for row in await conn.execute(statement)]


async def take_back(conn: Connection, keys: Collection[Key]) -> None:
    """Forget moved rows (their jobs run again from a replay)."""
    if keys:
        await conn.execute(delete(FinishedJobRow).where(keys_in(keys)))


async def claimed_again(
    conn: Connection, inserted: set[Key], claims: Mapping[Key, Claim], reopenable: Collection[str]
) -> dict[Key, ClaimOutcome]:
    """Claims that inserted a ``jobs`` row for a job whose row had moved: a replay of one that
    ended ``reopenable`` runs again, its claim count continuing; any other is answered with
    what is kept of it, and its new row goes."""
    found = await moved(conn, inserted)
    if not found:
        return {}
    outcomes: dict[Key, ClaimOutcome] = {}
    again = [k for k, row in found.items() if claims[k].reopen and row.status in reopenable]
    for key in again:
        generation = found[key].claims + 1
        tenant, job_id = key
        await conn.execute(
            update(JobRow)
            .where(JobRow.tenant == tenant, JobRow.job_id == job_id)
            .values(claims=generation)
        )
        outcomes[key] = Claimed(generation)
    await take_back(conn, again)
    answered = [key for key in found if key not in outcomes]
    if answered:
        await conn.execute(delete(JobRow).where(keys_in(answered, JobRow)))
        for key in answered:
            outcomes[key] = AlreadyFinished(expired_result(found[key]), [])
    return outcomes


async def gone_since_insert(
    conn: Connection, keys: list[Key], reopen: Collection[Key], now: float
) -> dict[Key, ClaimOutcome]:
    """Keys whose ``jobs`` row conflicted with a claim, then left before it was read (the
    pruner moved it): answered from what was kept; a replay, or a row gone entirely, is asked
    again (the claim loop retries a job held by nobody)."""
    found = await moved(conn, keys)
    outcomes: dict[Key, ClaimOutcome] = {}
    for key in keys:
        row = found.get(key)
        if row is None or key in reopen:
            outcomes[key] = HeldElsewhere(None, now)
        else:
            outcomes[key] = AlreadyFinished(expired_result(row), [])
    return outcomes


def _error(code: str) -> JobError:
    """The kept error; a code this version does not know (stored by a newer one) is kept as
    text (codes are open for readers), never a reason to fail the claim that asked."""
    return JobError(code=code, message=EXPIRED_MESSAGE)


def expired_result(row: Moved) -> str:
    """The result republished for a redelivered job whose row moved."""
    error = None
    if row.error_code is not None:
        error = _error(row.error_code)
    result = JobResult.model_validate(
        {
            "job_id": row.job_id,
            "tenant": row.tenant,
            "batch_id": row.batch_id,
            "kind": row.kind,
            "route": row.route,
            "status": row.status,
            "provider": row.provider,
            "deployment": row.deployment,
            "usage": TokenUsage(input_tokens=row.input_tokens, output_tokens=row.output_tokens),
            "cost_usd": from_nano(row.cost_nusd),
            "attempts": row.attempts,
            "error": error,
            "completed_at": datetime.fromtimestamp(row.completed_at, UTC),
            "output_expired": True,
        }
    )
    return result.model_dump_json()
