"""Publishing results, usage events and dead letters with one shared aiokafka producer.

``send`` appends to a per-partition batch (broker/batches.py) and returns a future for its
delivery without waiting; callers await the futures of one job, so thousands of jobs share each
produce request. Dead letters, rare and possibly large, go through ``AIOKafkaProducer.send``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer, ConsumerRecord

from broker.batches import BatchSender
from broker.topics import (
    HEADER_ATTEMPTS,
    HEADER_ERROR,
    HEADER_NOT_BEFORE,
    HEADER_RETRY_COUNT,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    Topics,
)

MAX_HEADER_TEXT = 1000
_PARKING_HEADERS = {HEADER_NOT_BEFORE, HEADER_RETRY_COUNT, HEADER_ATTEMPTS, HEADER_SOURCE_TOPIC}
Headers = Sequence[tuple[str, bytes]]


class Publisher:
    def __init__(self, producer: AIOKafkaProducer, topics: Topics, linger_s: float) -> None:
        self._producer = producer
        self._batches = BatchSender(producer, linger_s)
        self.topics = topics

    async def send(
        self, topic: str, key: str, value: bytes, headers: Headers = ()
    ) -> asyncio.Future[None]:
        """Append one record; the future (shared with its batch) is done once it is acked."""
        return await self._batches.append(topic, key.encode("utf-8"), value, headers)

    async def drain(self) -> None:
        """Send what is waiting in open batches and wait for it."""
        await self._batches.drain()

    async def dead_letter(
        self, record: ConsumerRecord[bytes, bytes], reason: str
    ) -> asyncio.Future[object]:
        """The original key and bytes, with why and where it came from in the headers."""
        headers = [
            *(record.headers or ()),
            (HEADER_ERROR, reason[:MAX_HEADER_TEXT].encode("utf-8", "replace")),
            (HEADER_SOURCE_TOPIC, record.topic.encode()),
            (HEADER_SOURCE_PARTITION, str(record.partition).encode()),
            (HEADER_SOURCE_OFFSET, str(record.offset).encode()),
        ]
        future: asyncio.Future[object] = await self._producer.send(
            self.topics.dlq, value=record.value, key=record.key, headers=headers
        )
        return future

    async def park(
        self,
        record: ConsumerRecord[bytes, bytes],
        not_before_s: float,
        parks: int,
        attempts: int,
    ) -> asyncio.Future[object]:
        """The job's original bytes to the retry topic, to run again from ``not_before_s``.

        Its own headers travel along (a signature stays valid); the lane it came from is kept
        across parks."""
        source = record.topic
        for name, value in record.headers or ():
            if name == HEADER_SOURCE_TOPIC and record.topic == self.topics.retry:
                source = value.decode("utf-8", "replace")
        headers = [(n, v) for n, v in record.headers or () if n not in _PARKING_HEADERS]
        headers += [
            (HEADER_NOT_BEFORE, str(round(not_before_s * 1000)).encode()),
            (HEADER_RETRY_COUNT, str(parks).encode()),
            (HEADER_ATTEMPTS, str(attempts).encode()),
            (HEADER_SOURCE_TOPIC, source.encode()),
        ]
        future: asyncio.Future[object] = await self._producer.send(
            self.topics.retry, value=record.value, key=record.key, headers=headers
        )
        return future
