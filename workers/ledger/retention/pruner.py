"""The pruner: runs the retention steps in batches, one worker at a time, and rebuilds what
a large pass emptied.

Each batch is one short transaction that also renews the pruner's lease (``ledger_leases``):
a worker that lost the lease stops at its next batch, so two workers never prune at once, and
claims and finishes interleave with the batches. On PostgreSQL, a pass that removed at least
as many rows of ``jobs`` (or ``usage_events``) as remain rebuilds that table's indexes with
``REINDEX TABLE CONCURRENTLY`` (it blocks neither reads nor writes; VACUUM alone never gives a
B-tree's pages back — docs/architecture.md measured 738 → 209 bytes per job).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.settings import RetentionSettings
from workers.audit import rows as audit_rows
from workers.ledger.database.refusals import not_permitted
from workers.ledger.database.transactions import Connection, Transact
from workers.ledger.retention import steps

log = logging.getLogger(__name__)
LEASE = "prune"
#: which rows each step is due to handle at a cutoff (a dry run counts them)
DUE = {
    **steps.DUE,
    audit_rows.delete_records: audit_rows.records_due,
    audit_rows.delete_captures: audit_rows.captures_due,
}
HOUR, DAY = 3600.0, 86_400.0


@dataclass(slots=True)
class PruneReport:
    """What one pass did (or, dry, would do)."""

    moved: int = 0  # finished jobs moved out of ``jobs``
    usage_rolled_up: int = 0  # usage events summed into days and deleted
    finished_deleted: int = 0  # moved jobs past the lanes' retention, deleted
    usage_days_deleted: int = 0  # daily usage sums past theirs
    audit_deleted: int = 0  # audit records past theirs
    captures_deleted: int = 0  # captured prompts and outputs past theirs
    reindexed: list[str] = field(default_factory=list)
    held: bool = True  # False: another worker holds the lease; nothing was done
    seconds: float = 0.0
    longest_batch_s: float = 0.0


class Pruner:
    """Prunes the ledger ``every`` so often (``run_forever``) or once (``prune``)."""

    def __init__(
        self,
        run: Transact,
        engine: AsyncEngine,
        settings: RetentionSettings,
        *,
        owner: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._run = run
        self._engine = engine
        self._settings = settings
        self._owner = owner
        self._clock = clock

    def _cutoffs(self, now: float) -> list[tuple[str, steps.Step, float]]:
        s = self._settings
        return [
            ("moved", steps.move_finished, now - s.results_h * HOUR),
            ("usage_rolled_up", steps.roll_up_usage, now - s.usage_h * HOUR),
            ("finished_deleted", steps.delete_finished, now - s.jobs_d * DAY),
            ("usage_days_deleted", steps.delete_usage_days, now - s.usage_days_d * DAY),
            ("audit_deleted", audit_rows.delete_records, now - s.audit_d * DAY),
            ("captures_deleted", audit_rows.delete_captures, now - s.audit_captures_d * DAY),
        ]

    async def prune(self, *, dry_run: bool = False) -> PruneReport:
        """One pass: each step repeated until it finds less than a batch."""
        started = time.monotonic()
        now = self._clock()
        report = PruneReport()
        if dry_run:
            await self._count(report, now)
        else:
            for name, step, before in self._cutoffs(now):
                done = await self._repeat(step, before, report)
                if done is None:
                    report.held = False
                    break
                setattr(report, name, done)
            if report.held:
                await self._reindex(report)
                release = functools.partial(steps.release_lease, name=LEASE, owner=self._owner)
                await self._run(release)
        report.seconds = time.monotonic() - started
        return report

    async def _repeat(self, step: steps.Step, before: float, report: PruneReport) -> int | None:
        """``step`` in batches until one comes up short; None if the lease was lost."""
        total = 0
        batch = self._settings.batch
        lease_s = max(60.0, self._settings.prune_s)

        async def leased(conn: Connection) -> int | None:
            now = self._clock()
            if not await steps.take_lease(conn, LEASE, self._owner, now, now + lease_s):
                return None
            return await step(conn, before, batch)

        while True:
            started = time.monotonic()
            done = await self._run(leased)
            report.longest_batch_s = max(report.longest_batch_s, time.monotonic() - started)
            if done is None:
                return None
            total += done
            if done < batch:
                return total

    async def _count(self, report: PruneReport, now: float) -> None:
        cutoffs = self._cutoffs(now)

        async def counts(conn: Connection) -> list[int]:
            return [
                int(
                    (await conn.execute(select(func.count()).where(DUE[step](before)))).scalar_one()
                )
                for _, step, before in cutoffs
            ]

        for (name, _, _), found in zip(cutoffs, await self._run(counts), strict=True):
            setattr(report, name, found)

    async def _reindex(self, report: PruneReport) -> None:
        if self._engine.dialect.name != "postgresql":
            return
        removed = {"jobs": report.moved, "usage_events": report.usage_rolled_up}
        async with self._engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for table, count in removed.items():
                if not count:
                    continue
                live = await auto.scalar(
                    text("SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = :t"),
                    {"t": table},
                )
                if count >= int(live or 0):
                    try:
                        await auto.execute(text(f"REINDEX TABLE CONCURRENTLY {table}"))
                    except DBAPIError as error:
                        if not not_permitted(error):
                            raise
                        # a pruning role that does not own the table (PostgreSQL < 17 has
                        # no MAINTAIN right to grant it): the indexes shrink as reused
                        log.info("indexes of %s not rebuilt: %s", table, error.orig)
                        continue
                    report.reindexed.append(table)

    async def run_forever(self) -> None:
        """Prune every ``prune_s``, until cancelled; a failed pass is logged and tried again."""
        while True:
            await asyncio.sleep(self._settings.prune_s)
            try:
                report = await self.prune()
            except Exception as error:  # the database: the next pass tries again
                log.warning("pruning the ledger failed: %s", error)
                continue
            if report.held and (report.moved or report.usage_rolled_up or report.finished_deleted):
                log.info(
                    "ledger pruned: %d jobs moved, %d usage events summed, %d old jobs deleted "
                    "(%.1f s, longest batch %.2f s)",
                    report.moved,
                    report.usage_rolled_up,
                    report.finished_deleted,
                    report.seconds,
                    report.longest_batch_s,
                )
