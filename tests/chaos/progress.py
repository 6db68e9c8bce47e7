"""Watching a backfill's results arrive while something breaks: when each distinct result was
first seen, so a scenario can wait for a share of them and report the rates and the longest
time without progress around its failure."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from broker.kafka import topic_partitions


@dataclass
class Progress:
    """Distinct result keys and the monotonic time each was first seen."""

    first_seen: dict[bytes, float] = field(default_factory=dict)
    marks: dict[str, float] = field(default_factory=dict)  # named moments (kill, restart)
    _grew: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def count(self) -> int:
        return len(self.first_seen)

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic()

    async def reached(self, count: int, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.count < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.count} of {count} results after {timeout_s:.0f} s")
            self._grew.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._grew.wait(), min(remaining, 1.0))

    def longest_gap_s(self) -> float:
        """The longest time between two consecutive new results."""
        times = sorted(self.first_seen.values())
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def rate(self, start: float, end: float) -> float:
        """New results per second between two moments."""
        seen = sum(1 for at in self.first_seen.values() if start <= at < end)
        return seen / (end - start) if end > start else 0.0

    def figures(self, before: str, after: str) -> dict[str, float]:
        """Results/s before ``before``, between the two marks, after ``after``; longest gap."""
        times = sorted(self.first_seen.values())
        start, end = times[0], times[-1]
        down, up = self.marks[before], self.marks[after]
        return {
            "results_per_s_before": round(self.rate(start, down), 1),
            "results_per_s_during": round(self.rate(down, up), 1),
            "results_per_s_after": round(self.rate(up, end), 1),
            "longest_without_progress_s": round(self.longest_gap_s(), 2),
            "down_for_s": round(up - down, 1),
        }


@contextlib.asynccontextmanager
async def watching(bootstrap: str, topic: str) -> AsyncIterator[Progress]:
    """Read ``topic`` from its beginning in the background while the block runs."""
    progress = Progress()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    partitions = await topic_partitions(consumer, topic, wait_s=30)
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)

    async def read() -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200)
            except KafkaError:  # a broker is down: its partitions are read once they move
                await asyncio.sleep(0.2)
                continue
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    if record.key is not None and record.key not in progress.first_seen:
                        progress.first_seen[record.key] = now
            if batches:
                progress._grew.set()

    task = asyncio.create_task(read())
    try:
        yield progress
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
