"""Records appended to per-partition batches all arrive, each on the partition Kafka's default
partitioner gives its key (the partition any other producer would choose)."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from broker.embedded import EmbeddedKafka
from broker.record_batches import RecordBatchSender
from tests.helpers import read_topic


async def test_every_record_arrives_on_its_keys_partition(
    kafka: EmbeddedKafka, prefix: str
) -> None:
    topic = f"{prefix}.batched"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 6, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, max_batch_size=16 * 1024)
    await producer.start()
    try:
        sender = RecordBatchSender(producer, linger_s=0.005)
        futures = [
            await sender.append(topic, f"key-{i}".encode(), b"v" * 300, [("h", b"1")])
            for i in range(2000)  # several full batches per partition
        ]
        for future in futures:
            await future
        reference = await (await producer.send(topic, b"ref", key=b"key-7"))
        # a record larger than a batch travels alone in a batch of its own
        await (await sender.append(topic, b"huge", b"x" * (64 * 1024)))
    finally:
        await producer.stop()
    seen = await read_topic(kafka.bootstrap, topic, until_keys=2001, decode=False)
    assert seen.distinct() == 2001
    assert len(seen.by_key["huge"][0]) == 64 * 1024
    partitions = {r.key: r.partition for r in seen.records if r.value != b"ref"}
    assert partitions[b"key-7"] == reference.partition
    assert all(
        dict(r.headers) == {"h": b"1"}
        for r in seen.records
        if r.key.startswith(b"key-") and r.value != b"ref"
    )
