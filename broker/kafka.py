"""aiokafka client options derived from Settings, in one place."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from broker.errors import ConfigError, TopicMissing
from broker.settings import Settings


def require_bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        raise ConfigError(
            "HEADWAY_KAFKA_BOOTSTRAP is not set: point it at your Kafka cluster "
            "(host:port[,host:port]) or use the embedded broker (`headway dev`, --embedded)"
        )
    return settings.kafka_bootstrap


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


async def topic_partitions(
    consumer: AIOKafkaConsumer, topic: str, wait_s: float = 5.0
) -> list[TopicPartition]:
    """Every partition of ``topic``, for a consumer that assigns them itself (no group).

    Such a consumer tracks no topic, and Apache Kafka answers its start-up metadata request
    with none (Tansu sends all): the topic is added to what its client asks about, and asked
    about again until it appears (a topic created a moment ago) or ``wait_s`` passes."""
    client = consumer._client  # aiokafka has no public call for "metadata of this topic"
    client.add_topic(topic)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        if loop.time() >= deadline:
            raise TopicMissing(topic)
        await client.force_metadata_update()
        if not consumer.partitions_for_topic(topic):
            await asyncio.sleep(0.1)
