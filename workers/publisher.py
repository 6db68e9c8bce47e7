"""Publishing results, usage events and dead letters with one shared aiokafka producer.

``send`` appends to the producer's batch and returns the delivery future without waiting
for it; callers gather the futures of one job, so thousands of jobs share each produce request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer, ConsumerRecord

from broker.topics import (
    HEADER_ERROR,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    Topics,
)

MAX_HEADER_TEXT = 1000
Headers = Sequence[tuple[str, bytes]]


class Publisher:
    def __init__(self, producer: AIOKafkaProducer, topics: Topics) -> None:
        self._producer = producer
        self.topics = topics

    async def send(
        self, topic: str, key: str | None, value: bytes, headers: Headers | None = None
    ) -> asyncio.Future[object]:
        future: asyncio.Future[object] = await self._producer.send(
            topic,
            value=value,
            key=key.encode("utf-8") if key is not None else None,
            headers=list(headers) if headers else None,
        )
        return future

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
