"""Batched ledger writes: many jobs' claims and results in one transaction.

Callers await one operation each; a flusher collects whatever is pending (waiting at most
``flush_ms`` for more) and runs it as one transaction, so the database sees a few large
transactions a second instead of thousands of small ones. SQLite gets one flusher (one writer);
PostgreSQL several. Each transaction goes through :mod:`workers.ledger.database.transactions`
(SQLite: one hand-off to the ledger's thread per transaction).

A flush the database refuses for a value one operation carries (workers/ledger/database/refusals.py)
is run again one operation per transaction: that operation alone fails, with
:class:`~broker.errors.LedgerRefused`, and the others are stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from broker.errors import LedgerRefused, LedgerUnavailable, SuspendedLedgerWork
from broker.settings import LedgerSettings
from workers.ledger.database.engine import is_sqlite
from workers.ledger.database.refusals import conflicted, refused_value
from workers.ledger.database.transactions import (
    Connection,
    Transactions,
    Work,
    transactions_for,
)
from workers.ledger.records import Claim, ClaimOutcome, Finish, FinishOutcome
from workers.ledger.repository import LedgerRepository
from workers.runtime.readiness import Readiness

T = TypeVar("T")

log = logging.getLogger(__name__)
SERVER_FLUSHERS = 4  # transactions a worker runs at once on a database that takes several
CONFLICT_TRIES = 5  # runs of one transaction the database keeps rolling back for conflicts

Op = Literal["claim", "finish", "settle"]


@dataclass(slots=True)
class _Pending:
    op: Op
    item: Any
    future: asyncio.Future[Any]


class LedgerWriter:
    """``async with LedgerWriter(engine, repo) as ledger: await ledger.claim(...)``."""

    def __init__(
        self,
        engine: AsyncEngine,
        repository: LedgerRepository,
        settings: LedgerSettings,
        readiness: Readiness,
    ) -> None:
        """``settings``: how long a batch waits for more writes and how many it takes;
        ``readiness`` learns when the database answers. SQLite gets one flusher (one writer),
        any other database ``SERVER_FLUSHERS``."""
        self.readiness = readiness
        self.engine = engine
        self.transactions: Transactions = transactions_for(engine)
        self.repository = repository
        self._flush_s = settings.flush_ms / 1000
        self._batch_max = settings.batch_max
        self._flushers = 1 if is_sqlite(engine.url) else SERVER_FLUSHERS
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    async def __aenter__(self) -> LedgerWriter:
        self._tasks = [asyncio.create_task(self._flush_loop()) for _ in range(self._flushers)]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        self._wakeup.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.transactions.close()
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(LedgerUnavailable("ledger writer closed"))
        self._queue.clear()

    # -- the operations -----------------------------------------------------------------------

    async def claim(self, claim: Claim) -> ClaimOutcome:
        result: ClaimOutcome = await self._submit("claim", claim)
        return result

    async def finish(self, finish: Finish) -> FinishOutcome:
        result: FinishOutcome = await self._submit("finish", finish)
        return result

    async def settle(self, finish: Finish) -> FinishOutcome:
        result: FinishOutcome = await self._submit("settle", finish)
        return result

    async def run(self, work: Work[T]) -> T:
        """Run ``work`` in its own transaction now (reads, lease renewal, releases); run again
        when the database rolled it back for a conflict (a deadlock with another worker's)."""
        try:
            result = await self._run_through_conflicts(work)
        except SuspendedLedgerWork:
            raise  # headway's bug, not the database's: retrying would not help
        except Exception as error:
            if refused_value(error):
                self.readiness.ledger_ok()
                raise LedgerRefused(
                    f"the database refused a value: {_first_line(error)}"
                ) from error
            self.readiness.ledger_failed(error)
            raise LedgerUnavailable(f"ledger: {error}") from error
        self.readiness.ledger_ok()
        return result

    async def _run_through_conflicts(self, work: Work[T]) -> T:
        for attempt in range(1, CONFLICT_TRIES + 1):
            try:
                return await self.transactions.run(work)
            except Exception as error:
                if attempt == CONFLICT_TRIES or not conflicted(error):
                    raise
                log.info("a ledger transaction met a conflict (run again): %s", error)
                await asyncio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    async def probe(self) -> None:
        """One trivial transaction: does the database answer?"""
        await self.run(lambda conn: conn.exec_driver_sql("SELECT 1"))

    async def renew_leases(self) -> int:
        count: int = await self.run(self.repository.renew_leases)
        return count

    async def release(self, key: tuple[str, str]) -> None:
        await self.run(lambda conn: self.repository.release(conn, key))

    async def release_all(self) -> None:
        await self.run(self.repository.release_all)

    async def _submit(self, op: Op, item: Any) -> Any:
        if self._closed:
            raise LedgerUnavailable("ledger writer closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(op, item, future))
        self._wakeup.set()
        return await future

    # -- the flusher --------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if len(self._queue) < self._batch_max and self._flush_s and not self._closed:
                await asyncio.sleep(self._flush_s)
            batch, self._queue = self._queue[: self._batch_max], self._queue[self._batch_max :]
            if batch:
                await self._flush(batch)

    async def _flush(self, batch: list[_Pending]) -> None:
        try:
            await self._flush_together(batch)
        except Exception as error:
            if not refused_value(error):
                self._unavailable(batch, error)
                return
            if len(batch) == 1:
                self._refused(batch[0], error)
                return
            log.warning("ledger refused a value in a flush of %d; one by one", len(batch))
            for pending in batch:
                try:
                    await self._flush_together([pending])
                except Exception as alone:
                    if refused_value(alone):
                        self._refused(pending, alone)
                    else:
                        self._unavailable([pending], alone)

    def _unavailable(self, batch: list[_Pending], error: Exception) -> None:
        log.warning("ledger flush of %d operations failed: %s", len(batch), error)
        self.readiness.ledger_failed(error)
        failure = LedgerUnavailable(f"ledger: {error}")
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(failure)

    def _refused(self, pending: _Pending, error: Exception) -> None:
        key = (getattr(pending.item, "tenant", "?"), getattr(pending.item, "job_id", "?"))
        log.warning("ledger refused the %s of %r: %s", pending.op, key, error)
        self.readiness.ledger_ok()  # the database answered: it is up
        if not pending.future.done():
            pending.future.set_exception(
                LedgerRefused(f"the database refused a value of this job: {_first_line(error)}")
            )

    async def _flush_together(self, batch: list[_Pending]) -> None:
        """One transaction for ``batch``; raises what the database raised."""
        groups: dict[Op, list[_Pending]] = {"claim": [], "finish": [], "settle": []}
        for pending in batch:
            groups[pending.op].append(pending)
        repo = self.repository

        async def work(conn: Connection) -> list[tuple[list[_Pending], Sequence[Any]]]:
            results: list[tuple[list[_Pending], Sequence[Any]]] = []
            if groups["finish"]:
                items = [p.item for p in groups["finish"]]
                results.append((groups["finish"], await repo.finish_many(conn, items)))
            if groups["settle"]:
                items = [p.item for p in groups["settle"]]
                results.append((groups["settle"], await repo.settle_many(conn, items)))
            if groups["claim"]:
                items = [p.item for p in groups["claim"]]
                results.append((groups["claim"], await repo.claim_many(conn, items)))
            return results

        results = await self.transactions.run(work)
        self.readiness.ledger_ok()
        for pendings, outcomes in results:
            for pending, outcome in zip(pendings, outcomes, strict=True):
                if not pending.future.done():
                    pending.future.set_result(outcome)


def _first_line(error: Exception) -> str:
    """The database's own words, without SQLAlchemy's statement and parameters."""
    return str(error).split("\n", 1)[0][:300]
