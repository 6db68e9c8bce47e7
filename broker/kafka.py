"""aiokafka in one place: client options derived from Settings, a topic's partitions, reading
partitions to their ends, and which produce errors are worth another try."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import (
    InvalidTopicError,
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
)

from broker.errors import ConfigError, ProducerFailed, TopicMissing
from broker.settings import Settings

# what a topic refuses whatever the moment: sending the same record again cannot help
REFUSED_FOR_GOOD = (
    TopicMissing,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    InvalidTopicError,
)
READ_TIMEOUT_MS = 500  # a poll that finds nothing for this long has reached the end


def require_bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        raise ConfigError(
            "HEADWAY_KAFKA_BOOTSTRAP is not set: point it at your Kafka cluster "
            "(host:port[,host:port]) or use the embedded broker (`headway dev`, --embedded)"
        )
    return settings.kafka_bootstrap


async def watch_producer(producer: AIOKafkaProducer, interval_s: float = 1.0) -> None:
    """Raise :class:`ProducerFailed` once the producer's sender has stopped. aiokafka keeps
    accepting records after a fatal error and fails each delivery, which a publisher would take
    for a passing outage and retry for ever while its partitions stall; a worker that stops
    instead hands its partitions to the others and is restarted by its orchestrator."""
    while True:
        await asyncio.sleep(interval_s)
        sender = getattr(producer, "_sender", None)  # aiokafka has no public health check
        task = getattr(sender, "sender_task", None)
        if isinstance(task, asyncio.Task) and task.done():
            why = "cancelled" if task.cancelled() else repr(task.exception())
            raise ProducerFailed(f"the Kafka producer's sender stopped ({why})")


def producer_options(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap_servers": require_bootstrap(settings),
        "acks": "all",
        "enable_idempotence": settings.enable_idempotence,
        "linger_ms": settings.producer_linger_ms,
        "max_batch_size": 256 * 1024,
        "max_request_size": max(settings.max_message_bytes * 2, 1024 * 1024),
        "request_timeout_ms": 30_000,
    }


def consumer_options(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap_servers": require_bootstrap(settings),
        "group_id": settings.consumer_group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": max(settings.session_timeout_ms // 4, 500),
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "max_partition_fetch_bytes": max(settings.max_message_bytes, 1024 * 1024),
        "fetch_max_bytes": 16 * 1024 * 1024,
        "max_poll_records": 2000,
        # a resumed partition must not wait behind a long-polling fetch of idle ones
        "fetch_max_wait_ms": 50,
    }


def refused_for_good(error: BaseException) -> bool:
    """A produce error that another try cannot mend (the topic is missing, the record too large,
    the producer not authorised). Every other Kafka error — brokers down, leaders moving, too
    few in-sync replicas, a delivery timeout — passes, and the record is sent again."""
    return isinstance(error, REFUSED_FOR_GOOD) or not isinstance(error, KafkaError)


async def partitions_of(client: Any, topic: str, wait_s: float = 5.0) -> list[int]:
    """The partitions of ``topic`` as the cluster's metadata has them, asking for that topic
    until it appears (a topic created a moment ago) or ``wait_s`` passes: then TopicMissing.
    No broker answering is not a missing topic: that raises KafkaConnectionError (transient).

    ``client`` is an aiokafka client (``producer.client``, ``consumer._client``): a consumer
    outside any group tracks no topic, and Apache Kafka answers its start-up metadata request
    with none (Tansu sends them all)."""
    found = client.cluster.partitions_for_topic(topic)
    if found:
        return sorted(found)
    client.add_topic(topic)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        answered = await client.force_metadata_update()
        found = client.cluster.partitions_for_topic(topic)
        if found:
            return sorted(found)
        if loop.time() >= deadline:
            if not answered:
                raise KafkaConnectionError(f"no broker answered a metadata request for {topic}")
            raise TopicMissing(topic)
        await asyncio.sleep(0.1)


async def topic_partitions(
    consumer: AIOKafkaConsumer, topic: str, wait_s: float = 5.0
) -> list[TopicPartition]:
    """Every partition of ``topic``, for a consumer that assigns them itself (no group)."""
    client = consumer._client  # aiokafka has no public call for "metadata of this topic"
    return [TopicPartition(topic, p) for p in await partitions_of(client, topic, wait_s)]


async def read_to_ends(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], cutoff_ms: int
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """The records of the assigned partitions from their positions: past the end offsets, then
    until a poll finds nothing more (some Kafka-compatible brokers, Tansu among them, report an
    end offset short of a batch's last record). A partition ends at its first record written
    after ``cutoff_ms``, so a read ends while producers go on writing."""
    done: set[TopicPartition] = set()
    while True:
        batches = await consumer.getmany(timeout_ms=READ_TIMEOUT_MS)
        for tp, records in sorted(batches.items(), key=lambda item: item[0].partition):
            for record in records:
                if record.timestamp > cutoff_ms:
                    done.add(tp)
                    consumer.pause(tp)
                    break
                yield record
        if len(done) == len(ends):
            return
        if not batches and all(
            [tp in done or await consumer.position(tp) >= end for tp, end in ends.items()]
        ):
            return
