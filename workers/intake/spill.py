"""Spilling: a lane's backlog waits in the ledger, so the fetch loop reads past it.

A lane's buffer holds what is about to run. When it is full, a fetched job of a tenant that
already holds its weighted share of it (:meth:`~workers.intake.scheduler.LaneScheduler.over_share`)
is **spilled** — its record stored in the ledger (:mod:`workers.ledger.spill_rows`) — and its
offset counts as finished once that row is committed. So the fetch loop never pauses for one
tenant's backlog: a tenant whose few jobs sit behind another's thousands in the same partitions
is read, buffered and served at once. While an account has spilled jobs waiting, its newly
fetched jobs are spilled too, so its work is served from one fair queue. A record is spilled on
its identity alone (:func:`~workers.intake.parsing.identity_of`) and validated when it comes
back.

The refill loop tops the buffers up from the ledger to what the runners start soon — the
accounts with the least virtual time first, by weight, across every worker
(:func:`~workers.ledger.spill_rows.take`) — and the job's row is deleted once the job has
finished. A worker holds the rows it took under a lease it
renews; a worker that dies leaves them to be taken again when the lease lapses, and a draining
worker gives back the ones it did not start. Records are stored in batches: a store that fails
(the database is down) keeps them, and the fetcher pauses the lanes until a store succeeds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from aiokafka import ConsumerRecord, TopicPartition

from broker.errors import LedgerRefused
from broker.topics import LANES
from schemas.jobs import Priority
from workers.intake.offsets import OffsetTracker
from workers.intake.parsing import Identity, ValidJob, held_bytes, parse_job, parse_job_aside
from workers.intake.scheduler import RECORD_OVERHEAD_BYTES, LaneScheduler, QueuedJob
from workers.ledger import spill_rows
from workers.ledger.database.transactions import Transact, Work
from workers.ledger.spill_rows import SpilledRecord, Taken

log = logging.getLogger(__name__)
T = TypeVar("T")

SPILLED = TopicPartition("headway:spilled", -1)  # where a job taken from the ledger "comes from"
STORE_MAX = 2000  # records stored per transaction
PENDING_MAX = 10_000  # records waiting to be stored before the fetcher pauses the lanes
TAKE_MAX = 256  # jobs taken from the ledger per lane and transaction
REFILL_IDLE_S = 0.05  # the refill loop's pause when it took nothing
ACCOUNTS_REFRESH_S = 0.5  # how often the accounts with spilled jobs are read again
RECLAIM_S = 5.0  # how often lapsed leases of spilled rows are looked for
SETTLE_S = 0.5  # finished rows are deleted at least this often (or every TAKE_MAX of them)


class Spill:
    """Spilled jobs of one worker: those to store, those it took, those it finished."""

    def __init__(
        self,
        run: Transact,
        scheduler: LaneScheduler,
        tracker: OffsetTracker,
        *,
        owner: str,
        lease_s: float,
        weight: Callable[[str], float],
        max_message_bytes: int,
        refill_to: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``refill_to``: the most jobs of a lane the buffer is refilled to from the ledger —
        about what the runners start before the next refill; more would be held from the
        other workers for nothing."""
        self._refill_to = refill_to
        self._run = run
        self._scheduler = scheduler
        self._tracker = tracker
        self._owner = owner
        self._lease_s = lease_s
        self._weight = weight
        self._max_message_bytes = max_message_bytes
        self._clock = clock
        self._pending: list[QueuedJob] = []
        self._finished: list[int] = []
        self._given_back: list[int] = []
        self._active: dict[Priority, set[str]] = {lane: set() for lane in LANES}
        self._waiting_weight: dict[Priority, float] = {lane: 0.0 for lane in LANES}
        self._waiting: dict[str, float] = {lane.value: 0.0 for lane in LANES}
        # one ledger transaction of this worker's spill at a time: its statements lock the
        # worker's own rows (renew, delete, release) in no common order
        self._ledger = asyncio.Lock()
        self._storing = asyncio.Lock()  # the fetch loop and a revocation may both store
        self.stored = 0  # records spilled to the ledger by this worker
        self.taken = 0  # spilled jobs this worker took to run

    # -- fetched jobs that wait in the ledger -------------------------------------------------

    def pressed(self, lane: Priority) -> bool:
        """Whether a fetched job of ``lane`` may be spilled: the lane is full, or accounts
        wait in the ledger for it. (Otherwise it is buffered; nothing needs a look.)"""
        return bool(self._active[lane]) or self._scheduler.full(lane)

    def wants(self, lane: Priority, account: str) -> bool:
        """Whether a fetched job of ``account`` is spilled rather than buffered: the account
        already waits in the ledger, or holds its share of the lane (full, or with accounts
        waiting in the ledger)."""
        if account in self._active[lane]:
            return True
        return self._scheduler.over_share(lane, account, self._waiting_weight[lane])

    def add(self, job: QueuedJob) -> None:
        self._pending.append(job)
        active = self._active[job.lane]
        if job.tenant not in active:
            active.add(job.tenant)
            self._waiting_weight[job.lane] += self._weight(job.tenant)

    @property
    def accepting(self) -> bool:
        """Whether more records may be spilled now (the stores keep up)."""
        return len(self._pending) < PENDING_MAX

    def waiting(self) -> dict[str, float]:
        """Spilled jobs waiting in the ledger per lane, every worker's (for metrics), as of
        the last look."""
        return dict(self._waiting)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def store(self) -> None:
        """Store what was spilled; each record's offset then counts as finished. Raises what
        the ledger raised (the records stay pending)."""
        async with self._storing:
            await self._store_pending()

    async def _store_pending(self) -> None:
        while self._pending:
            batch = self._pending[:STORE_MAX]
            try:
                await self._store_batch(batch)
            except LedgerRefused:  # a value the database will not hold: find it, buffer it
                for job in batch:
                    try:
                        await self._store_batch([job])
                    except LedgerRefused as refused:
                        log.warning("a job could not be spilled (%s): it waits in memory", refused)
                        if job.intake is None:  # spilled on its identity alone
                            job.intake = parse_job(job.record.value, self._max_message_bytes)
                            job.size = held_bytes(job.record.value, job.intake)
                            job.size += RECORD_OVERHEAD_BYTES
                        self._scheduler.put(job)  # its own path ends it (the ledger refuses)
            del self._pending[: len(batch)]

    async def _store_batch(self, batch: list[QueuedJob]) -> None:
        records = [_stored(job) for job in batch]
        await self._transact(
            functools.partial(spill_rows.store, records=records, now=self._clock())
        )
        for job in batch:
            self._tracker.done(job.tp, job.record.offset)
        self.stored += len(batch)

    async def hand_over(
        self, queued: list[QueuedJob], revoked: set[TopicPartition], timeout_s: float
    ) -> None:
        """Partitions were revoked: spill what they had queued in the buffer (and what was
        about to be stored), so their offsets commit up to where this worker had read and the
        new owner does not read again what was spilled after them. Whatever is not stored
        within ``timeout_s`` (or does not parse) is forgotten: the new owner reads it again."""
        for job in queued:
            if isinstance(job.intake, ValidJob):
                self.add(job)
        try:
            async with asyncio.timeout(timeout_s):
                await self.store()
        except Exception as error:
            log.warning("queued jobs of revoked partitions were not spilled: %s", error)
        self._pending = [job for job in self._pending if job.tp not in revoked]

    # -- spilled jobs taken back to run -------------------------------------------------------

    def finished(self, job: QueuedJob) -> None:
        """A job taken from the ledger has finished: its row goes."""
        if job.spill_id is not None:
            self._finished.append(job.spill_id)

    def give_back(self, job: QueuedJob) -> None:
        """A job taken from the ledger was not run (its runner failed): it waits again."""
        if job.spill_id is not None:
            self._given_back.append(job.spill_id)

    async def refill_forever(self) -> None:
        """Settle finished rows and top the lane buffers up from the ledger, until cancelled."""
        accounts_at = reclaimed_at = settled_at = 0.0
        while True:
            now = time.monotonic()
            try:
                if len(self._finished) >= TAKE_MAX or now - settled_at >= SETTLE_S:
                    settled_at = now
                    await self.settle()
                if now - reclaimed_at >= RECLAIM_S:
                    reclaimed_at = now
                    await self._transact(functools.partial(spill_rows.reclaim, now=self._clock()))
                if now - accounts_at >= ACCOUNTS_REFRESH_S:
                    accounts_at = now
                    await self._refresh_accounts()
                took = await self._refill()
            except Exception as error:  # the ledger: try again after a pause, never stop
                log.warning("spilled jobs could not be settled or taken: %s", error)
                took = 0
                await asyncio.sleep(ACCOUNTS_REFRESH_S)
            if not took:
                await asyncio.sleep(REFILL_IDLE_S)

    async def settle(self) -> None:
        """Delete finished rows and give back unrun ones."""
        if self._finished:
            done, self._finished = self._finished, []
            try:
                await self._transact(functools.partial(spill_rows.finish, ids=done))
            except BaseException:
                self._finished.extend(done)
                raise
        if self._given_back:
            back, self._given_back = self._given_back, []
            await self._transact(functools.partial(spill_rows.release, owner=self._owner, ids=back))

    async def _refresh_accounts(self) -> None:
        waiting = await self._transact(spill_rows.waiting_accounts)
        pending = {(job.lane, job.tenant) for job in self._pending}
        for lane in LANES:
            counts = waiting.get(lane.value, {})
            self._waiting[lane.value] = float(sum(counts.values()))
            self._active[lane] = set(counts) | {
                tenant for queued_lane, tenant in pending if queued_lane == lane
            }
            self._waiting_weight[lane] = sum(map(self._weight, self._active[lane]))

    async def _refill(self) -> int:
        took = 0
        # a take of a few rows costs nearly what one of many does: wait for room for half
        least = max(min(TAKE_MAX, self._scheduler.bound(self._refill_to) // 2), 1)
        for lane in LANES:
            room = min(self._scheduler.room(lane, self._refill_to), TAKE_MAX)
            if room < least or not self._active[lane]:
                continue
            taken: list[Taken] = await self._transact(
                functools.partial(
                    spill_rows.take,
                    lane=lane.value,
                    limit=room,
                    owner=self._owner,
                    lease_until=self._clock() + self._lease_s,
                    weight=self._weight,
                )
            )
            if not taken:  # until the next refresh says otherwise
                self._active[lane] = set()
                self._waiting_weight[lane] = 0.0
            now = self._clock()
            for row in taken:
                self._scheduler.put(await self._queued(row, lane, now))
            took += len(taken)
            self.taken += len(taken)
        return took

    async def _transact(self, work: Work[T]) -> T:
        async with self._ledger:
            return await self._run(work)

    async def _queued(self, taken: Taken, lane: Priority, now: float) -> QueuedJob:
        stored = taken.record
        key, value = stored.key, stored.value
        record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
            stored.topic,
            stored.partition,
            stored.offset,
            stored.timestamp,
            0,
            key,
            value,
            None,
            len(key) if key is not None else -1,
            len(value),
            spill_rows.decode_headers(stored.headers),
        )
        intake = await parse_job_aside(value, self._max_message_bytes)
        return QueuedJob(
            record,
            lane,
            SPILLED,
            held_bytes(value, intake) + RECORD_OVERHEAD_BYTES,
            stored.account,
            intake,
            spill_id=taken.id,
            waited_s=max(now - taken.spilled_at, 0.0),
        )

    async def renew(self) -> None:
        """Keep the rows this worker holds."""
        until = self._clock() + self._lease_s
        await self._transact(
            functools.partial(spill_rows.renew, owner=self._owner, lease_until=until)
        )

    async def close(self) -> None:
        """Settle what finished and give back every row still held (the worker drains)."""
        self._pending.clear()  # not stored: their offsets were not committed either
        await self.settle()
        await self._transact(functools.partial(spill_rows.release, owner=self._owner))


def _stored(job: QueuedJob) -> SpilledRecord:
    record = job.record
    identity = job.identity
    if identity is None:
        assert isinstance(job.intake, ValidJob)  # only valid jobs are handed over
        request = job.intake.job
        identity = Identity(request.tenant, request.job_id, request.batch_id)
    return SpilledRecord(
        job.lane.value,
        job.tenant,
        identity.tenant,
        identity.job_id,
        identity.batch_id,
        record.topic,
        record.partition,
        record.offset,
        record.timestamp,
        record.key,
        record.value or b"",
        spill_rows.encode_headers(record.headers or ()),
    )
