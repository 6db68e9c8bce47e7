"""A producer that writes what any Kafka client may write, though aiokafka's own never would:
header names that are not UTF-8 and null header values (the hostile-record specs)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from unittest import mock

from aiokafka import AIOKafkaProducer
from aiokafka.producer import message_accumulator
from aiokafka.producer import producer as producer_module
from aiokafka.record import default_records


class RawName(str):
    """A header name whose bytes on the wire are ``raw``: any bytes, valid UTF-8 or not."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawName:
        name = super().__new__(cls, raw.decode("latin-1"))
        name.raw = raw
        return name

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


Header = tuple[str, bytes | None]


@contextlib.asynccontextmanager
async def hostile_producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer whose records may carry :class:`RawName` header names (aiokafka's
    pure-Python record builder, which encodes names through ``str.encode``)."""
    python_builder = default_records._DefaultRecordBatchBuilderPy
    with (
        mock.patch.object(message_accumulator, "DefaultRecordBatchBuilder", python_builder),
        mock.patch.object(producer_module, "DefaultRecordBatchBuilder", python_builder),
    ):
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        try:
            yield producer
        finally:
            await producer.stop()


async def send_all(
    producer: AIOKafkaProducer, topic: str, records: Sequence[tuple[bytes, bytes, list[Header]]]
) -> None:
    """Send (key, value, headers) records in order and wait for every one."""
    for key, value, headers in records:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
