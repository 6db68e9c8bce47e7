"""A partition's next batch fills while one is in flight and goes when it is acknowledged:
idle, a record goes at once; under load, records share fewer, fuller batches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from broker.record_batches import RecordBatchSender, delivered


class _Broker:
    """Stands in for aiokafka's send path: records each batch sent; acks on demand."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.sent: list[tuple[int, int]] = []  # (partition, records)
        self.acks: list[asyncio.Future[None]] = []
        producer.send_batch = self.send_batch  # type: ignore[method-assign]

    async def partitions_for(self, topic: str) -> list[int]:
        return [0, 1, 2]

    async def send_batch(self, builder: Any, topic: str, *, partition: int) -> Any:
        self.sent.append((partition, builder.record_count()))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
async def broker() -> _Broker:
    return _Broker(AIOKafkaProducer())


@pytest.fixture
async def sender(broker: _Broker) -> RecordBatchSender:
    return RecordBatchSender(broker.producer, linger_s=0, partitions=broker.partitions_for)


async def test_a_record_goes_at_once_when_its_partition_has_nothing_in_flight(
    broker: _Broker, sender: RecordBatchSender
) -> None:
    first = await sender.append("t", b"k", b"v")
    await _settle()

    assert broker.sent == [(broker.sent[0][0], 1)]
    broker.acks[0].set_result(None)
    await delivered([first])


async def test_records_appended_while_a_batch_is_in_flight_go_together_when_it_lands(
    broker: _Broker, sender: RecordBatchSender
) -> None:
    first = await sender.append("t", b"k", b"1")
    await _settle()
    partition = broker.sent[0][0]

    later = [await sender.append("t", b"k", str(i).encode()) for i in range(5)]  # same key
    await _settle()
    assert broker.sent == [(partition, 1)]  # held: the first is still in flight
    assert not any(f.done() for f in later)

    broker.acks[0].set_result(None)
    await _settle()
    assert broker.sent == [(partition, 1), (partition, 5)]  # one batch for all five
    broker.acks[1].set_result(None)
    await delivered([first, *later])


async def test_drain_sends_held_batches_and_waits_for_them(
    broker: _Broker, sender: RecordBatchSender
) -> None:
    await sender.append("t", b"k", b"1")
    await _settle()
    held = await sender.append("t", b"k", b"2")

    async def acknowledge_all() -> None:
        while not held.done():
            for ack in broker.acks:
                if not ack.done():
                    ack.set_result(None)
            await asyncio.sleep(0)

    acking = asyncio.create_task(acknowledge_all())
    await asyncio.wait_for(sender.drain(), 5)
    await acking
    assert [records for _, records in broker.sent] == [1, 1]
    assert held.done()
