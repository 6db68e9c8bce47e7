"""Per-partition offset tracking for out-of-order completion.

Records of a partition arrive in offset order; jobs finish in any order. The commit point of a
partition is its lowest unfinished offset (or one past the last offset seen when none is
unfinished), so a commit never skips a job that has not produced its result. Marking is O(1);
advancing the commit point is amortised O(1) per record.
"""

from __future__ import annotations

from collections import deque

from aiokafka import TopicPartition


class PartitionOffsets:
    __slots__ = ("_done", "_next", "_pending")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._next: int | None = None

    def add(self, offset: int) -> None:
        if self._next is not None and offset < self._next:
            return  # already seen (a re-fetch after seek): the original entry stands
        self._pending.append(offset)
        self._next = offset + 1

    def done(self, offset: int) -> None:
        if self._pending and offset >= self._pending[0]:
            self._done.add(offset)

    @property
    def unfinished(self) -> int:
        return len(self._pending) - len(self._done)

    def commit_point(self) -> int | None:
        """The offset to commit: everything below it has finished."""
        pending, done = self._pending, self._done
        while pending and pending[0] in done:
            done.discard(pending.popleft())
        if pending:
            return pending[0]
        return self._next


class OffsetTracker:
    """Commit points of every assigned partition, and what was last committed."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, PartitionOffsets] = {}
        self._committed: dict[TopicPartition, int] = {}

    def assign(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._partitions.setdefault(tp, PartitionOffsets())

    def forget(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._partitions.pop(tp, None)
            self._committed.pop(tp, None)

    def add(self, tp: TopicPartition, offset: int) -> None:
        partition = self._partitions.get(tp)
        if partition is None:
            partition = self._partitions[tp] = PartitionOffsets()
        partition.add(offset)

    def done(self, tp: TopicPartition, offset: int) -> None:
        partition = self._partitions.get(tp)
        if partition is not None:  # a revoked partition's late finish is simply dropped
            partition.done(offset)

    def unfinished(self, partitions: set[TopicPartition] | None = None) -> int:
        chosen = self._partitions if partitions is None else partitions
        return sum(self._partitions[tp].unfinished for tp in chosen if tp in self._partitions)

    def to_commit(self, partitions: set[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Commit points that moved since the last :meth:`committed` call."""
        chosen = self._partitions if partitions is None else partitions
        moved: dict[TopicPartition, int] = {}
        for tp in chosen:
            partition = self._partitions.get(tp)
            point = partition.commit_point() if partition is not None else None
            if point is not None and point != self._committed.get(tp):
                moved[tp] = point
        return moved

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)
