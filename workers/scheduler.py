"""The bounded, lane-ordered buffer between the Kafka fetch loop and the job runners.

Runners take high before normal before low. Each lane is bounded by count and bytes on its own,
so a full low lane pauses only the low topic's partitions and never holds up high-priority work.
(Fairness between tenants inside a lane is a later layer over the same interface.)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import ConsumerRecord, TopicPartition

from broker.topics import LANES
from schemas.jobs import Priority


@dataclass(slots=True)
class QueuedJob:
    record: ConsumerRecord[bytes, bytes]
    lane: Priority
    tp: TopicPartition
    size: int


class LaneScheduler:
    def __init__(self, max_jobs_per_lane: int, max_bytes_per_lane: int) -> None:
        self._lanes: dict[Priority, deque[QueuedJob]] = {lane: deque() for lane in LANES}
        self._bytes: dict[Priority, int] = dict.fromkeys(LANES, 0)
        self._max_jobs = max_jobs_per_lane
        self._max_bytes = max_bytes_per_lane
        self._getters: deque[asyncio.Future[QueuedJob]] = deque()

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._lanes.values())

    def full(self, lane: Priority) -> bool:
        return len(self._lanes[lane]) >= self._max_jobs or self._bytes[lane] >= self._max_bytes

    def has_room(self, lane: Priority) -> bool:
        """Below half of both bounds: a paused lane may resume."""
        return (
            len(self._lanes[lane]) <= self._max_jobs // 2
            and self._bytes[lane] <= self._max_bytes // 2
        )

    def put(self, job: QueuedJob) -> None:
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(job)  # queues are empty whenever a runner waits
                return
        self._lanes[job.lane].append(job)
        self._bytes[job.lane] += job.size

    def _pop(self) -> QueuedJob | None:
        for lane in LANES:
            queue = self._lanes[lane]
            if queue:
                job = queue.popleft()
                self._bytes[lane] -= job.size
                return job
        return None

    async def get(self) -> QueuedJob:
        job = self._pop()
        if job is not None:
            return job
        getter: asyncio.Future[QueuedJob] = asyncio.get_running_loop().create_future()
        self._getters.append(getter)
        try:
            return await getter
        except asyncio.CancelledError:
            if getter.done() and not getter.cancelled():
                self._push_front(getter.result())
            raise

    def _push_front(self, job: QueuedJob) -> None:
        self._lanes[job.lane].appendleft(job)
        self._bytes[job.lane] += job.size

    def drop(self, partitions: Iterable[TopicPartition]) -> int:
        """Forget queued (not started) jobs of these partitions; they will be redelivered."""
        gone = set(partitions)
        dropped = 0
        for lane, queue in self._lanes.items():
            kept = deque(job for job in queue if job.tp not in gone)
            dropped += len(queue) - len(kept)
            self._lanes[lane] = kept
            self._bytes[lane] = sum(job.size for job in kept)
        return dropped

    def clear(self) -> int:
        dropped = len(self)
        for lane in LANES:
            self._lanes[lane].clear()
            self._bytes[lane] = 0
        return dropped
