"""Ledger operations, each a batch in the caller's transaction.

``claim_many``: insert a running row with this worker's lease, or take over an expired lease,
or report the stored result of a finished job (or what was kept of one whose row moved past
the results window, :mod:`workers.ledger.retention.finished_rows`), or who holds it now.
``finish_many``: store a terminal result once — the first finisher wins; a later one is told
the stored result so it publishes that instead (exactly one distinct result per job).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from sqlalchemy import select, tuple_, update

from workers.audit import rows as audit_rows
from workers.ledger import cache_rows
from workers.ledger.database.models import JobRow, RowStatus, UsageRow, held_by
from workers.ledger.database.statements import FINISH_COLUMNS, dialect_insert, statements
from workers.ledger.database.transactions import Connection
from workers.ledger.quota_rows import BudgetLedger
from workers.ledger.records import (
    AlreadyFinished,
    Claim,
    Claimed,
    ClaimOutcome,
    Finish,
    FinishOutcome,
    HeldElsewhere,
    Key,
    Stored,
)
from workers.ledger.retention import finished_rows

RUNNING = RowStatus.RUNNING.value
#: what a replay from the dead-letter topic may run again (what was dead-lettered ends so)
REOPENABLE = frozenset({RowStatus.FAILED.value, RowStatus.REJECTED.value})


class LedgerRepository:
    """Stateless SQL for the ledger; the clock and the lease length are injected.

    A claim of a running row this worker's own lease holds takes it over at once: its caller
    runs each job at most once at a time (the pipeline keeps one claimant per job), so such a
    lease is an orphan — an earlier claim that committed but whose answer was lost when the
    connection broke. Waiting for it would wait for ever, since the worker renews its leases.
    """

    def __init__(self, owner: str, lease_s: float, clock: Callable[[], float]) -> None:
        self.owner = owner
        self.lease_s = lease_s
        self.clock = clock

    # -- claims -------------------------------------------------------------------------------

    async def claim_many(self, conn: Connection, claims: Sequence[Claim]) -> list[ClaimOutcome]:
        now = self.clock()
        unique: dict[Key, Claim] = {}
        for claim in claims:
            unique.setdefault(claim.key, claim)
        inserted = await self._insert_claims(conn, list(unique.values()), now)
        outcomes: dict[Key, ClaimOutcome] = {key: Claimed(1) for key in inserted}
        if inserted:  # a new row for a job that finished before the results window?
            outcomes.update(await finished_rows.claimed_again(conn, inserted, unique, REOPENABLE))
        conflicted = [key for key in unique if key not in inserted]
        if conflicted:
            reopen = {key for key in conflicted if unique[key].reopen}
            outcomes.update(await self._resolve_conflicts(conn, conflicted, now, reopen))
        # a duplicate within one batch waits for the first copy (held by us)
        results: list[ClaimOutcome] = []
        seen: set[Key] = set()
        for claim in claims:
            if claim.key in seen and isinstance(outcomes[claim.key], Claimed):
                results.append(HeldElsewhere(self.owner, now + self.lease_s))
            else:
                results.append(outcomes[claim.key])
            seen.add(claim.key)
        return results

    async def _insert_claims(self, conn: Connection, claims: list[Claim], now: float) -> set[Key]:
        sql = statements(conn.dialect.name)
        owner, expires = self.owner, now + self.lease_s
        inserted: set[Key] = set()
        step = sql.claim_rows_max
        for start in range(0, len(claims), step):
            chunk = claims[start : start + step]
            params: list[Any] = []
            for c in chunk:
                params += (c.tenant, c.job_id, RUNNING, c.batch_id, c.kind, c.route)
                params += (0, 0, 0, 0, owner, expires, 1, now, now)
            result = await conn.exec_driver_sql(sql.claim_insert(len(chunk)), tuple(params))
            inserted.update(cast("list[Key]", result.all()))
        return inserted

    async def _resolve_conflicts(
        self, conn: Connection, keys: list[Key], now: float, reopen: set[Key]
    ) -> dict[Key, ClaimOutcome]:
        existing = {
            (row.tenant, row.job_id): row
            for row in await conn.execute(
                select(
                    JobRow.tenant,
                    JobRow.job_id,
                    JobRow.status,
                    JobRow.result_json,
                    JobRow.lease_owner,
                    JobRow.lease_expires_at,
                ).where(tuple_(JobRow.tenant, JobRow.job_id).in_(keys))
            )
        }
        gone = [key for key in keys if key not in existing]  # moved since the insert
        outcomes = await finished_rows.gone_since_insert(conn, gone, reopen, now)
        usage = await self._usage_payloads(
            conn, [k for k in existing if existing[k].status != RowStatus.RUNNING]
        )
        for key in keys:
            row = existing.get(key)
            if row is None:
                continue
            if key in reopen and row.status in REOPENABLE:
                outcomes[key] = await self._take_over(conn, key, now, reopen=row.status)
            elif row.status != RowStatus.RUNNING:
                outcomes[key] = AlreadyFinished(row.result_json or "", usage.get(key, []))
            elif row.lease_expires_at <= now or row.lease_owner == self.owner:
                outcomes[key] = await self._take_over(conn, key, now)
            else:
                outcomes[key] = HeldElsewhere(row.lease_owner, row.lease_expires_at)
        return outcomes

    async def _take_over(
        self, conn: Connection, key: Key, now: float, reopen: str | None = None
    ) -> ClaimOutcome:
        """Claim a running job whose lease lapsed or is our own orphan, or (``reopen``) one that
        ended so."""
        tenant, job_id = key
        held = (
            (JobRow.status == reopen)
            if reopen is not None
            else (JobRow.status == RowStatus.RUNNING.value)
            & ((JobRow.lease_expires_at <= now) | (JobRow.lease_owner == self.owner))
        )
        statement = (
            update(JobRow)
            .where(JobRow.tenant == tenant, JobRow.job_id == job_id, held)
            .values(
                status=RowStatus.RUNNING.value,
                lease_owner=self.owner,
                lease_expires_at=now + self.lease_s,
                claims=JobRow.claims + 1,
                updated_at=now,
            )
            .returning(JobRow.claims)
        )
        generation = (await conn.execute(statement)).scalar_one_or_none()
        if generation is not None:
            return Claimed(generation)
        row = (
            await conn.execute(
                select(
                    JobRow.status, JobRow.result_json, JobRow.lease_owner, JobRow.lease_expires_at
                ).where(JobRow.tenant == tenant, JobRow.job_id == job_id)
            )
        ).one_or_none()
        if row is None:  # moved meanwhile
            gone = {key} if reopen else set()
            return (await finished_rows.gone_since_insert(conn, [key], gone, now))[key]
        if row.status != RowStatus.RUNNING:
            usage = await self._usage_payloads(conn, [key])
            return AlreadyFinished(row.result_json or "", usage.get(key, []))
        return HeldElsewhere(row.lease_owner, row.lease_expires_at)

    async def _usage_payloads(self, conn: Connection, keys: list[Key]) -> dict[Key, list[str]]:
        if not keys:
            return {}
        found: dict[Key, list[str]] = {}
        statement = (
            select(UsageRow.tenant, UsageRow.job_id, UsageRow.payload)
            .where(tuple_(UsageRow.tenant, UsageRow.job_id).in_(keys))
            .order_by(UsageRow.timestamp, UsageRow.event_id)
        )
        for row in await conn.execute(statement):
            found.setdefault((row.tenant, row.job_id), []).append(row.payload)
        return found

    # -- finishing ----------------------------------------------------------------------------

    async def finish_many(
        self, conn: Connection, finishes: Sequence[Finish]
    ) -> list[FinishOutcome]:
        """Store terminal results of claimed jobs; a job finished already keeps its result."""
        if not finishes:
            return []
        await self._settle_budgets(conn, finishes)
        await self._insert_usage(conn, finishes)
        await cache_rows.store(conn, [f.cache for f in finishes if f.cache is not None])
        sql = statements(conn.dialect.name)
        params = [(*self._finish_row(f), f.tenant, f.job_id) for f in finishes]
        result = await conn.exec_driver_sql(sql.finish, params)
        if result.rowcount == len(finishes):  # SQLite reports executemany's row count
            await audit_rows.insert(conn, finishes)
            return [Stored() for _ in finishes]
        outcomes = await self._which_were_stored(conn, finishes)
        await _audit_stored(conn, finishes, outcomes)
        return outcomes

    async def _which_were_stored(
        self, conn: Connection, finishes: Sequence[Finish]
    ) -> list[FinishOutcome]:
        """One read tells whose result is stored: ours, or an earlier finisher's."""
        keys = [f.key for f in finishes]
        stored = {
            (row.tenant, row.job_id): row.result_json
            for row in await conn.execute(
                select(JobRow.tenant, JobRow.job_id, JobRow.result_json).where(
                    tuple_(JobRow.tenant, JobRow.job_id).in_(keys)
                )
            )
        }
        others = [f.key for f in finishes if stored.get(f.key) not in (None, f.result_json)]
        usage = await self._usage_payloads(conn, others)
        outcomes: list[FinishOutcome] = []
        for finish in finishes:
            text = stored.get(finish.key)
            if text == finish.result_json:
                outcomes.append(Stored())
            elif text is None:  # no row at all (never claimed): store it now
                outcomes.append(await self._stored_or_insert(conn, finish))
            else:
                outcomes.append(AlreadyFinished(text, usage.get(finish.key, [])))
        return outcomes

    async def settle_many(
        self, conn: Connection, finishes: Sequence[Finish]
    ) -> list[FinishOutcome]:
        """Store terminal results of jobs that were never claimed (rejections at intake)."""
        outcomes: list[FinishOutcome] = []
        for finish in finishes:
            outcomes.append(await self._stored_or_insert(conn, finish))
        await _audit_stored(conn, finishes, outcomes)
        return outcomes

    async def _stored_or_insert(self, conn: Connection, finish: Finish) -> FinishOutcome:
        row = (
            await conn.execute(
                select(
                    JobRow.status, JobRow.result_json, JobRow.lease_owner, JobRow.lease_expires_at
                ).where(JobRow.tenant == finish.tenant, JobRow.job_id == finish.job_id)
            )
        ).one_or_none()
        if row is None and (gone := await finished_rows.moved(conn, [finish.key])):
            return AlreadyFinished(finished_rows.expired_result(gone[finish.key]), [])
        if row is None:
            values = self._finish_values(finish)
            values.update(
                tenant=finish.tenant, job_id=finish.job_id, created_at=finish.completed_at, claims=0
            )
            insert = dialect_insert(conn)
            await conn.execute(insert(JobRow).values(**values).on_conflict_do_nothing())
            await self._insert_usage(conn, [finish])
            return Stored()
        if row.status == RowStatus.RUNNING:
            if row.lease_owner == self.owner or row.lease_expires_at <= self.clock():
                return await self._end_running(conn, finish)  # a poison job's own claim
            return HeldElsewhere(row.lease_owner, row.lease_expires_at)
        usage = await self._usage_payloads(conn, [finish.key])
        return AlreadyFinished(row.result_json or "", usage.get(finish.key, []))

    async def _end_running(self, conn: Connection, finish: Finish) -> FinishOutcome:
        """Store a terminal result over a running row this worker holds or nobody holds."""
        ended = await conn.execute(
            update(JobRow)
            .where(
                JobRow.tenant == finish.tenant,
                JobRow.job_id == finish.job_id,
                JobRow.status == RowStatus.RUNNING.value,
                (JobRow.lease_owner == self.owner) | (JobRow.lease_expires_at <= self.clock()),
            )
            .values(**self._finish_values(finish))
        )
        if ended.rowcount != 1:  # taken over meanwhile
            return HeldElsewhere("", 0.0)
        await self._insert_usage(conn, [finish])
        return Stored()

    @staticmethod
    def _finish_row(finish: Finish) -> tuple[Any, ...]:
        """The values of FINISH_COLUMNS, in order."""
        at = finish.completed_at
        return (
            finish.status.value,
            finish.batch_id,
            finish.kind,
            finish.route,
            finish.provider,
            finish.deployment,
            finish.attempts,
            finish.input_tokens,
            finish.output_tokens,
            finish.cost_nusd,
            finish.result_json,
            None,  # lease_owner
            0.0,  # lease_expires_at
            at,  # updated_at
            at,  # completed_at
        )

    @classmethod
    def _finish_values(cls, finish: Finish) -> dict[str, Any]:
        return dict(zip(FINISH_COLUMNS, cls._finish_row(finish), strict=True))

    async def _settle_budgets(self, conn: Connection, finishes: Sequence[Finish]) -> None:
        """Add the cost of the usage events about to be stored (not those stored before: a
        redelivered finish adds nothing) to the budgets, and drop the jobs' holds."""
        budgeted = [f for f in finishes if f.budget_period is not None]
        if not budgeted:
            return
        ids = [u.event_id for f in budgeted for u in f.usage]
        stored: set[str] = set()
        if ids:
            found = await conn.execute(select(UsageRow.event_id).where(UsageRow.event_id.in_(ids)))
            stored = set(found.scalars())
        for f in budgeted:
            assert f.budget_period is not None
            cost = sum(u.cost_nusd for u in f.usage if u.event_id not in stored)
            await BudgetLedger.settle(conn, f.tenant, f.job_id, f.budget_period, cost, self.owner)

    async def _insert_usage(self, conn: Connection, finishes: Sequence[Finish]) -> None:
        rows = [
            (
                u.event_id,
                f.tenant,
                f.job_id,
                f.batch_id,
                u.route,
                u.provider,
                u.deployment,
                u.input_tokens,
                u.output_tokens,
                u.cost_nusd,
                u.cached,
                u.timestamp,
                u.payload,
                u.tags,
            )  # USAGE_COLUMNS, in order
            for f in finishes
            for u in f.usage
        ]
        if rows:
            await conn.exec_driver_sql(statements(conn.dialect.name).usage_insert, rows)

    # -- leases -------------------------------------------------------------------------------

    async def renew_leases(self, conn: Connection) -> int:
        """Extend every lease this worker holds; returns how many. A lease it gave up (a
        parked job) or that lapsed stays so: renewing it would make the job's next run, here
        or elsewhere, wait for a holder that is not running it."""
        now = self.clock()
        result = await conn.execute(
            update(JobRow)
            .where(
                JobRow.lease_owner == self.owner,
                JobRow.status == RowStatus.RUNNING.value,
                JobRow.lease_expires_at > now,
            )
            .values(lease_expires_at=now + self.lease_s, updated_at=now)
        )
        return int(result.rowcount)

    async def release(self, conn: Connection, key: Key) -> None:
        """Give up this worker's lease on one job (parked: whoever runs it next may claim)."""
        tenant, job_id = key
        await conn.execute(
            update(JobRow)
            .where(
                JobRow.tenant == tenant,
                JobRow.job_id == job_id,
                held_by(self.owner),
                JobRow.status == RowStatus.RUNNING.value,
            )
            .values(lease_expires_at=0.0)
        )

    async def release_all(self, conn: Connection) -> None:
        """Give up this worker's leases on jobs it will not finish, so no one need wait."""
        await conn.execute(
            update(JobRow)
            .where(JobRow.lease_owner == self.owner, JobRow.status == RowStatus.RUNNING.value)
            .values(lease_expires_at=0.0)
        )


async def _audit_stored(
    conn: Connection, finishes: Sequence[Finish], outcomes: Sequence[FinishOutcome]
) -> None:
    """Audit records for the finishes stored here (not for one another finisher stored)."""
    stored = [f for f, o in zip(finishes, outcomes, strict=True) if isinstance(o, Stored)]
    await audit_rows.insert(conn, stored)
