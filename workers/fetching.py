"""Fetching with backpressure: one consumer feeds the lane buffers of a worker.

Records of the job lanes go to the :class:`~workers.scheduler.LaneScheduler`, parked ones
(the retry topic) to the :class:`~workers.delays.DelayQueue` until they are due. A lane whose
buffer is full has its partitions paused — only that lane's — and resumed below half, so
memory stays bounded whatever the backlog. Every fetched offset is registered with the
:class:`~workers.offsets.OffsetTracker` before its job is queued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from broker.topics import HEADER_SOURCE_TOPIC, Topics
from schemas.jobs import Priority
from workers.delays import DelayQueue
from workers.intake import Intake, InvalidJob, ValidJob, parse_job
from workers.offsets import OffsetTracker
from workers.scheduler import LaneScheduler, QueuedJob

FETCH_TIMEOUT_MS = 100
PARKED_POLL_S = 0.25  # how often parked jobs are checked for being due
RECORD_OVERHEAD_BYTES = 200  # what a queued record costs beyond its value, roughly


def _tenant_of(intake: Intake) -> str:
    if isinstance(intake, ValidJob):
        return intake.job.tenant
    if isinstance(intake, InvalidJob):
        return intake.tenant or ""
    return ""


def _header(record: ConsumerRecord[bytes, bytes], name: str) -> str:
    for key, value in record.headers or ():
        if key == name:
            text: str = value.decode("utf-8", "replace")
            return text
    return ""


def lane_of(
    record: ConsumerRecord[bytes, bytes], lanes: Mapping[str, Priority], retry: str
) -> Priority:
    """A record's lane: its job topic's, or — parked on the retry topic — that of the topic it
    was parked from (``headway-source-topic``); normal when that is unknown."""
    topic = _header(record, HEADER_SOURCE_TOPIC) if record.topic == retry else record.topic
    return lanes.get(topic, Priority.NORMAL)


class Fetcher:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topics: Topics,
        scheduler: LaneScheduler,
        delays: DelayQueue,
        tracker: OffsetTracker,
        *,
        chunk: int,
        max_message_bytes: int,
    ) -> None:
        self._consumer = consumer
        self._topics = topics
        self._lanes = topics.job_lanes
        self._scheduler = scheduler
        self._delays = delays
        self._tracker = tracker
        self._chunk = chunk
        self._max_message_bytes = max_message_bytes
        self._paused: set[str] = set()  # topics whose partitions are paused
        self._fetched: dict[TopicPartition, int] = {}  # next offset to fetch, per partition
        self.first_fetch_at: float | None = None  # perf_counter() of the first record fetched

    async def run(self) -> None:
        """Fetch until cancelled."""
        while True:
            # a fixed chunk: a lane holds at most its bound plus one chunk, and fetches stay
            # large (one record per call near the bound would cost more than the jobs)
            batches = await self._consumer.getmany(
                timeout_ms=FETCH_TIMEOUT_MS, max_records=self._chunk
            )
            if batches and self.first_fetch_at is None:
                self.first_fetch_at = time.perf_counter()
            for tp, records in batches.items():
                for record in records:
                    self._tracker.add(tp, record.offset)
                    self._enqueue(tp, record)
                if records:
                    self._fetched[tp] = records[-1].offset + 1
            self._apply_backpressure()

    def _enqueue(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        size = len(record.value or b"") + RECORD_OVERHEAD_BYTES
        intake = parse_job(record.value, self._max_message_bytes)
        tenant = _tenant_of(intake)
        queued = QueuedJob(
            record, lane_of(record, self._lanes, self._topics.retry), tp, size, tenant, intake
        )
        if tp.topic == self._topics.retry:  # parked: waits for its time, then its own lane
            self._delays.put(queued)
        else:
            self._scheduler.put(queued)

    async def release_parked_forever(self) -> None:
        """Hand parked jobs to the scheduler when their time comes."""
        while True:
            for job in self._delays.due():
                self._scheduler.put(job)
            wait = self._delays.seconds_to_next()
            await asyncio.sleep(PARKED_POLL_S if wait is None else min(wait, PARKED_POLL_S))

    def _apply_backpressure(self) -> None:
        """Pause a lane's partitions when its buffer is full; resume below half. The retry
        topic likewise, by the parked jobs waiting."""
        bounds = [
            (topic, self._scheduler.full(lane), self._scheduler.has_room(lane))
            for topic, lane in self._lanes.items()
        ]
        bounds.append((self._topics.retry, self._delays.full(), self._delays.has_room()))
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
