"""A producer that writes what any Kafka client may write, though aiokafka's own never would:
header names that are not UTF-8 and null header values (the hostile-record specs)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any
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


class _PythonBatchBuilder(message_accumulator.BatchBuilder):  # type: ignore[misc]
    """A batch built by aiokafka's pure-Python record builder, which encodes header names
    through ``str.encode`` (so a :class:`RawName` writes its raw bytes)."""

    def __init__(self, batch_size: int, compression_type: int, **kwargs: Any) -> None:
        super().__init__(batch_size, compression_type, **kwargs)
        self._builder = default_records._DefaultRecordBatchBuilderPy(
            2,
            compression_type,
            is_transactional=kwargs.get("is_transactional", 0),
            producer_id=-1,
            producer_epoch=-1,
            base_sequence=0,
            batch_size=batch_size,
        )


@contextlib.asynccontextmanager
async def hostile_producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer whose records may carry :class:`RawName` header names. Only this
    producer builds its batches in Python (a worker's idempotent producer in the same process
    must keep aiokafka's own builder); the size estimate every producer makes before a send
    is the pure-Python one while the block runs (the same figure, any ``str`` accepted)."""
    with mock.patch.object(producer_module, "DefaultRecordBatchBuilder", _Estimator):
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        accumulator = producer._message_accumulator

        def create_builder(key_serializer: Any = None, value_serializer: Any = None) -> Any:
            return _PythonBatchBuilder(
                accumulator._batch_size,
                accumulator._compression_type,
                key_serializer=key_serializer,
                value_serializer=value_serializer,
            )

        accumulator.create_builder = create_builder
        await producer.start()
        try:
            yield producer
        finally:
            await producer.stop()


class _Estimator:
    """Stands in for ``DefaultRecordBatchBuilder`` where the producer only estimates a
    record's size (``AIOKafkaProducer._serialize``)."""

    estimate_size_in_bytes = staticmethod(
        default_records._DefaultRecordBatchBuilderPy.estimate_size_in_bytes
    )


async def send_all(
    producer: AIOKafkaProducer, topic: str, records: Sequence[tuple[bytes, bytes, list[Header]]]
) -> None:
    """Send (key, value, headers) records in order and wait for every one."""
    for key, value, headers in records:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
