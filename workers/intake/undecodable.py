"""Stepping a consumer past records aiokafka cannot decode.

Any Kafka client can write a record aiokafka refuses to read — a header name that is not UTF-8,
a batch whose CRC does not match — and then a whole ``getmany`` raises, every time, for every
partition: without help the reader stops (or, retrying, never moves again). :class:`StepPast`
finds the record and moves past it:

1. every fetchable partition is sought back to the first record its owner has not taken (the
   failed fetch may have consumed other partitions' records and dropped them);
2. partitions are fetched one at a time — those that held such a record before first — until
   one raises;
3. that partition is fetched one record at a time up to the record, whose offset is handed to
   ``on_undecodable`` (the worker dead-letters it by position), and the partition is sought
   one past it.

Records fetched on the way go to ``on_records`` as usual, so nothing is lost or read twice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CorruptRecordException, IllegalOperation

#: what aiokafka raises for a record it cannot decode
UNDECODABLE = (UnicodeDecodeError, CorruptRecordException)
#: how long one partition's fetch may take while searching: a partition sought back must be
#: fetched again (a loaded broker or worker takes more than a normal poll's wait for that)
PROBE_TIMEOUT_MS = 3000
SUSPECTS_KEPT = 8

Batches = Mapping[TopicPartition, list[ConsumerRecord[bytes, bytes]]]

log = logging.getLogger(__name__)


class StepPast:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        next_offsets: Mapping[TopicPartition, int],
        on_records: Callable[[Batches], Awaitable[None]],
        on_undecodable: Callable[[TopicPartition, int, Exception], Awaitable[None]],
        chunk: int = 500,
    ) -> None:
        """``next_offsets``: per partition, the offset after the last record taken (kept
        current by the owner); ``on_records``: take fetched records; ``on_undecodable``: the
        record at (partition, offset) cannot be read, for this reason — the owner counts it as
        taken (its next offset moves past it), or the next search would rewind to it again."""
        self._consumer = consumer
        self._next = next_offsets
        self._on_records = on_records
        self._on_undecodable = on_undecodable
        self._chunk = chunk
        self._suspects: list[TopicPartition] = []
        self.stepped = 0  # records stepped past so far

    async def recover(self, fetchable: Sequence[TopicPartition]) -> bool:
        """After a fetch raised one of :data:`UNDECODABLE`: find the record and step past it.
        False when no partition holds one any more (the failure was transient)."""
        for tp in fetchable:
            await self._rewind(tp)
        ordered = [tp for tp in self._suspects if tp in fetchable]
        ordered += sorted(set(fetchable) - set(ordered))
        for tp in ordered:
            end = self._consumer.highwater(tp)
            if end is not None and await self._consumer.position(tp) >= end:
                continue  # nothing left to read there
            try:
                batch = await self._consumer.getmany(
                    tp, timeout_ms=PROBE_TIMEOUT_MS, max_records=self._chunk
                )
            except UNDECODABLE:
                return await self._locate(tp)
            await self._on_records(batch)
        return False

    async def _rewind(self, tp: TopicPartition) -> None:
        """Seek ``tp`` back to the first record not taken, if a failed fetch moved past it."""
        expected = self._next.get(tp)
        if expected is None:
            with contextlib.suppress(IllegalOperation):  # a reader in no group: none committed
                expected = await self._consumer.committed(tp)
        if expected is None:
            expected = (await self._consumer.beginning_offsets([tp]))[tp]
        if await self._consumer.position(tp) > expected:
            self._consumer.seek(tp, expected)

    async def _locate(self, tp: TopicPartition) -> bool:
        """Fetch ``tp`` one record at a time up to the undecodable one; step past it."""
        while True:
            try:
                batch = await self._consumer.getmany(tp, timeout_ms=PROBE_TIMEOUT_MS, max_records=1)
            except UNDECODABLE as caught:
                error: Exception = caught
                offset = await self._consumer.position(tp)
                break
            if not batch:
                return False  # read cleanly this time: the failure was transient
            await self._on_records(batch)
        self._suspects = [tp, *(s for s in self._suspects if s != tp)][:SUSPECTS_KEPT]
        self.stepped += 1
        log.warning("%s[%d] offset %d cannot be decoded: %s", tp.topic, tp.partition, offset, error)
        await self._on_undecodable(tp, offset, error)
        self._consumer.seek(tp, offset + 1)
        return True
