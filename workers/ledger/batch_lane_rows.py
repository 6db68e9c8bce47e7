"""Batch-lane state in the ledger: items handed to providers' Batch APIs and the submissions.

An item moves ``pending`` → ``packing`` (a worker took it to submit, under a lease) →
``submitted`` (in a provider batch) → ``done`` (its result stored) or back to ``pending``
when a packing worker's lease lapsed before it recorded the submission. The job's own row
stays ``running`` with the lease owner :data:`BATCH_OWNER` until its result is stored, so a
redelivered copy of the job sees it held and does nothing. Its budget hold, if any, passes to
the lane with it (owner :data:`BATCH_OWNER`, held as long as the job is) and is dropped when
the item is done.

Every statement here is a single conditional ``UPDATE`` (or ``INSERT``), so two workers
packing or polling at once never take the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, insert, or_, select, tuple_, update

from workers.ledger.database.models import (
    BatchItemRow,
    BudgetHoldRow,
    JobRow,
    ProviderBatchRow,
    RowStatus,
    held_by,
)
from workers.ledger.database.transactions import Connection

BATCH_OWNER = "headway:batch-lane"  # the lease owner of a job whose call is in a provider batch
PENDING, PACKING, SUBMITTED, DONE = "pending", "packing", "submitted", "done"


@dataclass(frozen=True, slots=True)
class Item:
    """A job in the lane: what is stored when it is handed over, and read back to submit it
    and to settle it."""

    tenant: str
    job_id: str
    custom_id: str
    deployment_key: str
    kind: str
    line: str
    job_json: str
    who_json: str
    topic: str
    record_value: str
    record_headers: str
    deadline: float | None
    generation: int


_ITEM_COLUMNS = [getattr(BatchItemRow, name) for name in Item.__slots__]


async def enqueue(conn: Connection, item: Item, hold_until: float, now: float) -> None:
    """Store the item and hand the job's row and budget hold to the batch lane (one
    transaction)."""
    values = {name: getattr(item, name) for name in Item.__slots__}
    await conn.execute(
        insert(BatchItemRow).values(**values, status=PENDING, lease_expires_at=0.0, created_at=now)
    )
    await conn.execute(
        update(JobRow)
        .where(JobRow.tenant == item.tenant, JobRow.job_id == item.job_id)
        .values(lease_owner=BATCH_OWNER, lease_expires_at=hold_until, updated_at=now)
    )
    await conn.execute(
        update(BudgetHoldRow)
        .where(BudgetHoldRow.tenant == item.tenant, BudgetHoldRow.job_id == item.job_id)
        .values(owner=BATCH_OWNER, expires_at=hold_until)
    )


async def take_pending(
    conn: Connection, deployment_key: str, limit: int, owner: str, lease_s: float, now: float
) -> list[Item]:
    """Take up to ``limit`` pending items of a deployment (oldest first) to submit."""
    taken_before = or_(
        BatchItemRow.status == PENDING,
        and_(BatchItemRow.status == PACKING, BatchItemRow.lease_expires_at < now),
    )
    candidates = (
        select(BatchItemRow.tenant, BatchItemRow.job_id)
        .where(BatchItemRow.deployment_key == deployment_key, taken_before)
        .order_by(BatchItemRow.created_at)
        .limit(limit)
    )
    keys = [(row.tenant, row.job_id) for row in await conn.execute(candidates)]
    if not keys:
        return []
    await conn.execute(
        update(BatchItemRow)
        .where(tuple_(BatchItemRow.tenant, BatchItemRow.job_id).in_(keys), taken_before)
        .values(status=PACKING, lease_owner=owner, lease_expires_at=now + lease_s)
    )
    rows = await conn.execute(
        select(*_ITEM_COLUMNS).where(
            tuple_(BatchItemRow.tenant, BatchItemRow.job_id).in_(keys),
            BatchItemRow.status == PACKING,
            BatchItemRow.lease_owner == owner,
        )
    )
    return [Item(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class Waiting:
    """A deployment's items waiting to be packed: how many, and since when."""

    deployment_key: str
    items: int
    oldest: float


async def waiting(conn: Connection, now: float) -> list[Waiting]:
    rows = await conn.execute(
        select(
            BatchItemRow.deployment_key,
            func.count(),
            func.min(BatchItemRow.created_at),
        )
        .where(
            or_(
                BatchItemRow.status == PENDING,
                and_(BatchItemRow.status == PACKING, BatchItemRow.lease_expires_at < now),
            )
        )
        .group_by(BatchItemRow.deployment_key)
    )
    return [Waiting(key, int(count), float(oldest)) for key, count, oldest in rows]


async def submitted(
    conn: Connection,
    provider_batch: str,
    deployment_key: str,
    items: Sequence[Item],
    owner: str,
    now: float,
) -> None:
    """Record a provider batch and mark its items (still held by ``owner``) submitted."""
    await conn.execute(
        insert(ProviderBatchRow).values(
            id=provider_batch,
            deployment_key=deployment_key,
            items=len(items),
            status=SUBMITTED,
            lease_owner=None,
            lease_expires_at=0.0,
            created_at=now,
            ended_at=None,
        )
    )
    await conn.execute(
        update(BatchItemRow)
        .where(
            tuple_(BatchItemRow.tenant, BatchItemRow.job_id).in_(
                [(i.tenant, i.job_id) for i in items]
            ),
            BatchItemRow.lease_owner == owner,
        )
        .values(status=SUBMITTED, provider_batch=provider_batch)
    )


async def release_packing(conn: Connection, items: Sequence[Item], owner: str) -> None:
    """A submission failed: its items are pending again."""
    await conn.execute(
        update(BatchItemRow)
        .where(
            tuple_(BatchItemRow.tenant, BatchItemRow.job_id).in_(
                [(i.tenant, i.job_id) for i in items]
            ),
            BatchItemRow.status == PACKING,
            BatchItemRow.lease_owner == owner,
        )
        .values(status=PENDING, lease_owner=None, lease_expires_at=0.0)
    )


async def take_due_batch(
    conn: Connection, owner: str, lease_s: float, now: float
) -> tuple[str, str] | None:
    """Lease one submitted provider batch due a look (its lease lapsed, or it was never
    looked at): (id, deployment_key)."""
    due = and_(ProviderBatchRow.status == SUBMITTED, ProviderBatchRow.lease_expires_at < now)
    row = (
        await conn.execute(
            select(ProviderBatchRow.id, ProviderBatchRow.deployment_key)
            .where(due)
            .order_by(ProviderBatchRow.lease_expires_at)
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    taken = await conn.execute(
        update(ProviderBatchRow)
        .where(ProviderBatchRow.id == row.id, due)
        .values(lease_owner=owner, lease_expires_at=now + lease_s)
    )
    return (row.id, row.deployment_key) if taken.rowcount else None


async def look_again(conn: Connection, provider_batch: str, owner: str, at: float) -> None:
    """The batch has not ended: it is due another look (by any worker) at ``at``."""
    await conn.execute(
        update(ProviderBatchRow)
        .where(ProviderBatchRow.id == provider_batch, ProviderBatchRow.lease_owner == owner)
        .values(lease_expires_at=at)
    )


async def items_of(conn: Connection, provider_batch: str) -> list[Item]:
    rows = await conn.execute(
        select(*_ITEM_COLUMNS).where(
            BatchItemRow.provider_batch == provider_batch, BatchItemRow.status == SUBMITTED
        )
    )
    return [Item(*row) for row in rows]


async def batch_ended(conn: Connection, provider_batch: str, now: float) -> None:
    await conn.execute(
        update(ProviderBatchRow)
        .where(ProviderBatchRow.id == provider_batch)
        .values(status="ended", ended_at=now, lease_owner=None)
    )


async def items_done(conn: Connection, keys: Sequence[tuple[str, str]]) -> None:
    """The items' results are stored (or they went back online): nothing more to do; their
    budget holds go (a stored result settled its cost; an online run holds anew)."""
    if not keys:
        return
    await conn.execute(
        update(BatchItemRow)
        .where(tuple_(BatchItemRow.tenant, BatchItemRow.job_id).in_(list(keys)))
        .values(status=DONE)
    )
    await conn.execute(
        delete(BudgetHoldRow).where(
            tuple_(BudgetHoldRow.tenant, BudgetHoldRow.job_id).in_(list(keys)),
            BudgetHoldRow.owner == BATCH_OWNER,
        )
    )


async def take_overdue(conn: Connection, before: float, limit: int) -> list[Item]:
    """Items not done whose deadline is before ``before``: they must go back online now.
    They are marked done here (one worker takes each), so the caller republishes them."""
    overdue = and_(
        BatchItemRow.status.in_([PENDING, PACKING, SUBMITTED]),
        BatchItemRow.deadline.is_not(None),
        BatchItemRow.deadline < before,
    )
    keys = [
        (row.tenant, row.job_id)
        for row in await conn.execute(
            select(BatchItemRow.tenant, BatchItemRow.job_id).where(overdue).limit(limit)
        )
    ]
    if not keys:
        return []
    chosen = tuple_(BatchItemRow.tenant, BatchItemRow.job_id).in_(keys)
    taken = await conn.execute(  # RETURNING: of two workers at once, each row goes to one
        update(BatchItemRow).where(chosen, overdue).values(status=DONE).returning(*_ITEM_COLUMNS)
    )
    return [Item(*row) for row in taken]


async def release_jobs(conn: Connection, keys: Sequence[tuple[str, str]]) -> None:
    """Give jobs back to the online path: their rows are claimable again at once."""
    if not keys:
        return
    await conn.execute(
        update(JobRow)
        .where(
            tuple_(JobRow.tenant, JobRow.job_id).in_(list(keys)),
            JobRow.status == RowStatus.RUNNING.value,
            held_by(BATCH_OWNER),
        )
        .values(lease_owner=None, lease_expires_at=0.0)
    )
