"""Fetching with backpressure: one consumer feeds the lane buffers of a worker.

Records of the job lanes go to the :class:`~workers.intake.scheduler.LaneScheduler`, parked ones
(the retry topic) to the :class:`~workers.intake.parked.ParkedJobs` until they are due. When a
lane's buffer is full, a job whose tenant holds its share of it is spilled to the ledger
(:mod:`workers.intake.spill`) and fetching goes on, so one tenant's backlog never hides
another's jobs behind it. Only when spilled records cannot be stored fast enough (or at all:
the database is down) — or without a spill — does a full lane have its partitions paused,
only that lane's, resumed below half: memory stays bounded whatever the backlog. Every fetched
offset is registered with the :class:`~workers.intake.offsets.OffsetTracker` before its job is
queued.

A large record is parsed in a thread (:func:`~workers.intake.parsing.parse_job_aside`): what
intake admits may still take tens of milliseconds to parse, and a fetch of such records would
hold every tenant's jobs behind the event loop for seconds.

A record aiokafka cannot decode (any client can write a header name that is not UTF-8) makes
a whole fetch raise; :mod:`workers.intake.undecodable` finds it, the fetcher dead-letters it by its
position, and fetching goes on past it: one record never stops the worker or stalls its
partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from broker.headers import header_text
from broker.topics import HEADER_SOURCE_TOPIC, Topics
from schemas.jobs import Priority
from workers.intake.offsets import OffsetTracker
from workers.intake.parked import ParkedJobs
from workers.intake.parsing import (
    Intake,
    Unreadable,
    held_bytes,
    identity_of,
    parse_job_aside,
    tenant_of,
)
from workers.intake.scheduler import RECORD_OVERHEAD_BYTES, LaneScheduler, QueuedJob
from workers.intake.spill import Spill
from workers.intake.undecodable import UNDECODABLE, Batches, StepPast

FETCH_TIMEOUT_MS = 100
PARKED_POLL_S = 0.25  # how often parked jobs are checked for being due
UNDECODABLE_PAUSE_S = 0.05  # after a failed fetch whose record was not found (a transient CRC)
STORE_RETRY_S = 1.0  # after spilled records could not be stored
SPILL_CHUNK = 2000  # records asked of the consumer at a time while full lanes spill

log = logging.getLogger(__name__)


def lane_of(
    record: ConsumerRecord[bytes, bytes], lanes: Mapping[str, Priority], retry: str
) -> Priority:
    """A record's lane: its job topic's, or — parked on the retry topic — that of the topic it
    was parked from (``headway-source-topic``); normal when that is unknown."""
    topic = (
        header_text(record.headers, HEADER_SOURCE_TOPIC) if record.topic == retry else record.topic
    )
    return lanes.get(topic, Priority.NORMAL)


class Fetcher:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topics: Topics,
        scheduler: LaneScheduler,
        parked: ParkedJobs,
        tracker: OffsetTracker,
        *,
        chunk: int,
        max_message_bytes: int,
        account: Callable[[str], str] = str,
        spill: Spill | None = None,
    ) -> None:
        """``account``: whose fair share a tenant's jobs take (``HeadwayConfig.account``);
        ``spill``: where jobs over their share of a full lane wait (None: the lane pauses)."""
        self._account = account
        self._spill = spill
        self._store_failed = False
        self._consumer = consumer
        self._topics = topics
        self._lanes = topics.job_lanes
        self._scheduler = scheduler
        self._parked = parked
        self._tracker = tracker
        self._chunk = chunk
        self._max_message_bytes = max_message_bytes
        self._paused: set[str] = set()  # topics whose partitions are paused
        self._fetched: dict[TopicPartition, int] = {}  # next offset to fetch, per partition
        self.first_fetch_at: float | None = None  # perf_counter() of the first record fetched
        self._step_past = StepPast(
            consumer, self._fetched, self._took, self._dead_letter_undecodable, chunk
        )

    async def run(self) -> None:
        """Fetch until cancelled."""
        while True:
            # a fixed chunk: a lane holds at most its bound plus one chunk, and fetches stay
            # large (one record per call near the bound would cost more than the jobs); while
            # spilling, what does not fit goes to the ledger, so a fetch may be a store's worth
            chunk = max(self._chunk, SPILL_CHUNK) if self._spills() else self._chunk
            try:
                batches = await self._consumer.getmany(
                    timeout_ms=FETCH_TIMEOUT_MS, max_records=chunk
                )
            except UNDECODABLE as error:
                log.warning("a fetch failed on a record that cannot be decoded: %s", error)
                if not await self._step_past.recover(self._fetchable()):
                    await asyncio.sleep(UNDECODABLE_PAUSE_S)
                continue
            await self._take(batches)
            await self._store_spilled()
            self._apply_backpressure()

    async def _store_spilled(self) -> None:
        spill = self._spill
        if spill is None or not spill.pending:
            return
        try:
            await spill.store()
            self._store_failed = False
        except Exception as error:  # the ledger: lanes pause until a store succeeds
            if not self._store_failed:
                log.warning("spilled jobs could not be stored (lanes pause): %s", error)
            self._store_failed = True
            await asyncio.sleep(STORE_RETRY_S)

    def _spills(self) -> bool:
        """Whether a full lane may keep fetching (over-share jobs are stored instead)."""
        spill = self._spill
        return spill is not None and spill.accepting and not self._store_failed

    async def _take(
        self, batches: Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        if batches and self.first_fetch_at is None:
            self.first_fetch_at = time.perf_counter()
        for tp, records in batches.items():
            for record in records:
                self._tracker.add(tp, record.offset)
                await self._enqueue(tp, record)
            if records:
                self._fetched[tp] = records[-1].offset + 1

    # -- records that cannot be decoded -------------------------------------------------------

    async def _took(self, batches: Batches) -> None:
        await self._take(batches)

    async def _dead_letter_undecodable(
        self, tp: TopicPartition, offset: int, error: Exception
    ) -> None:
        reason = (
            f"undecodable record: {type(error).__name__}: {error}; the Kafka client cannot read "
            f"it, so this dead letter carries no key, value or headers: the record stays at "
            f"{tp.topic}[{tp.partition}] offset {offset} until the topic's retention"
        )
        record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
            tp.topic, tp.partition, offset, 0, 0, None, None, None, -1, -1, []
        )
        self._tracker.add(tp, offset)
        await self._enqueue(tp, record, Unreadable(reason))
        self._fetched[tp] = offset + 1

    def _fetchable(self) -> list[TopicPartition]:
        return [tp for tp in self._consumer.assignment() if tp.topic not in self._paused]

    @property
    def undecodable(self) -> int:
        """Records dead-lettered because aiokafka could not decode them."""
        return self._step_past.stepped

    def forget(self, revoked: Iterable[TopicPartition]) -> None:
        """Revoked partitions: what was fetched from them no longer says where they stand."""
        for tp in revoked:
            self._fetched.pop(tp, None)

    async def _enqueue(
        self,
        tp: TopicPartition,
        record: ConsumerRecord[bytes, bytes],
        intake: Intake | None = None,
    ) -> None:
        size = len(record.value or b"") + RECORD_OVERHEAD_BYTES
        lane = lane_of(record, self._lanes, self._topics.retry)
        parked = tp.topic == self._topics.retry
        if intake is None and not parked and self._spill is not None and self._spill.pressed(lane):
            identity = identity_of(record.value, self._max_message_bytes)
            if identity is not None:  # spilled jobs are validated when they come back
                account = self._account(identity.tenant)
                if self._spill.wants(lane, account):
                    self._spill.add(QueuedJob(record, lane, tp, size, account, identity=identity))
                    return
        if intake is None:
            intake = await parse_job_aside(record.value, self._max_message_bytes)
        size = held_bytes(record.value, intake) + RECORD_OVERHEAD_BYTES  # the parsed job too
        queued = QueuedJob(record, lane, tp, size, self._account(tenant_of(intake)), intake)
        if parked:  # waits for its time, then its own lane
            self._parked.put(queued)
        else:
            self._scheduler.put(queued)

    async def release_parked_forever(self) -> None:
        """Hand parked jobs to the scheduler when their time comes."""
        while True:
            for job in self._parked.due():
                self._scheduler.put(job)
            wait = self._parked.seconds_to_next()
            await asyncio.sleep(PARKED_POLL_S if wait is None else min(wait, PARKED_POLL_S))

    def _apply_backpressure(self) -> None:
        """Pause a lane's partitions when its buffer is full and nothing can be spilled (or
        it holds twice its bound: tenants under their shares); resume below half, or as soon as
        spilling works and the lane is below twice its bound. The retry topic likewise, by the
        parked jobs waiting."""
        spills = self._spills()
        bounds = [
            (
                topic,
                self._scheduler.overfull(lane) if spills else self._scheduler.full(lane),
                self._scheduler.has_room(lane) or (spills and not self._scheduler.overfull(lane)),
            )
            for topic, lane in self._lanes.items()
        ]
        bounds.append((self._topics.retry, self._parked.full(), self._parked.has_room()))
        for topic, full, has_room in bounds:
            if topic not in self._paused and full:
                self._paused.add(topic)
                self._consumer.pause(*self._partitions_of(topic))
            elif topic in self._paused and has_room:
                self._paused.discard(topic)
                self._consumer.resume(*self._partitions_of(topic))

    def _partitions_of(self, topic: str) -> list[TopicPartition]:
        return [tp for tp in self._consumer.assignment() if tp.topic == topic]

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """A new assignment starts unpaused: pause what belongs to a full lane."""
        paused = [tp for tp in assigned if tp.topic in self._paused]
        if paused:
            self._consumer.pause(*paused)

    def lag(self) -> dict[str, float]:
        """Records not fetched yet, per lane, by the last fetch's high watermarks."""
        lag = {lane.value: 0.0 for lane in self._lanes.values()}
        for tp in self._consumer.assignment():
            lane = self._lanes.get(tp.topic)
            highwater = self._consumer.highwater(tp)
            if lane is None or highwater is None:
                continue
            lag[lane.value] += max(0, highwater - self._fetched.get(tp, 0))
        return lag
