"""Parked jobs: records of ``headway.retry`` waiting for their not-before time.

A job that must wait long for a provider (a long Retry-After, every deployment's circuit
open) is not slept on: the worker republishes it to ``headway.retry`` with the time it may run
again (``headway-not-before``, epoch milliseconds) and lets its slot and its partition go. A
worker consuming ``headway.retry`` keeps those records here, ordered by that time, and hands
each to the lane scheduler when it is due. The queue is bounded: when it is full the retry
topic's partitions are paused, like a full lane's. Its records stay uncommitted until their
jobs finish, so a crash loses none.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from broker.headers import RecordHeaders, header_int
from broker.topics import HEADER_NOT_BEFORE
from workers.intake.scheduler import QueuedJob


def not_before_s(headers: RecordHeaders) -> float:
    """The epoch time a parked record may run from (0 when it does not say)."""
    return header_int(headers, HEADER_NOT_BEFORE) / 1000


@dataclass(order=True, slots=True)
class _Entry:
    due: float
    order: int
    job: QueuedJob = field(compare=False)


class ParkedJobs:
    def __init__(self, max_jobs: int, clock: Callable[[], float] = time.time) -> None:
        self._heap: list[_Entry] = []
        self._max_jobs = max_jobs
        self._clock = clock
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def full(self) -> bool:
        return len(self._heap) >= self._max_jobs

    def has_room(self) -> bool:
        return len(self._heap) <= self._max_jobs // 2

    def put(self, job: QueuedJob) -> None:
        due = not_before_s(job.record.headers)
        heapq.heappush(self._heap, _Entry(due, next(self._counter), job))

    def due(self) -> list[QueuedJob]:
        """Take every job whose time has come."""
        now = self._clock()
        ready: list[QueuedJob] = []
        while self._heap and self._heap[0].due <= now:
            ready.append(heapq.heappop(self._heap).job)
        return ready

    def seconds_to_next(self) -> float | None:
        if not self._heap:
            return None
        return max(0.0, self._heap[0].due - self._clock())

    def drop(self, partitions: Iterable[TopicPartition]) -> int:
        """Forget waiting jobs of these partitions (revoked): they will be redelivered."""
        gone = set(partitions)
        kept = [entry for entry in self._heap if entry.job.tp not in gone]
        dropped = len(self._heap) - len(kept)
        heapq.heapify(kept)
        self._heap = kept
        return dropped

    def clear(self) -> int:
        dropped = len(self._heap)
        self._heap.clear()
        return dropped
