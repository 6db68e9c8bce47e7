"""Helpers shared by the integration tests: running a worker, reading topics plainly."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from broker.admin import create_topics
from broker.config import HeadwayConfig
from broker.kafka import topic_partitions
from broker.settings import Settings
from workers.runtime.worker import Worker


def chat_job(job_id: str, **overrides: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "job_id": job_id,
        "tenant": "demo",
        "kind": "chat",
        "route": "summarize",
        "messages": [{"role": "user", "content": f"Please summarise document {job_id}."}],
    }
    job.update(overrides)
    return job


def embedding_job(job_id: str, **overrides: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "job_id": job_id,
        "tenant": "demo",
        "kind": "embedding",
        "route": "embed",
        "input": [f"first text of {job_id}", f"second text of {job_id}"],
    }
    job.update(overrides)
    return job


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, config: HeadwayConfig, **kwargs: Any
) -> AsyncIterator[Worker]:
    """A Worker serving in the background until the block ends (then drained)."""
    await create_topics(settings, config)
    stop = asyncio.Event()
    async with Worker(settings, config, **kwargs) as worker:
        task = asyncio.create_task(worker.run(stop))
        try:
            yield worker
        finally:
            stop.set()
            await task


@dataclass
class Collected:
    """Messages read from a topic: values by key, and the raw records."""

    by_key: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    records: list[Any] = field(default_factory=list)

    def distinct(self) -> int:
        return len(self.by_key)


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until_keys: int,
    timeout_s: float = 60.0,
    decode: bool = True,
    until_records: int = 0,
) -> Collected:
    """Read ``topic`` from the beginning until ``until_keys`` distinct keys (and at least
    ``until_records`` records) were seen."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    collected = Collected()
    try:
        tps = await topic_partitions(consumer, topic, wait_s=10)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (
            collected.distinct() < until_keys or len(collected.records) < until_records
        ) and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    collected.records.append(record)
                    key = (record.key or b"").decode()
                    value = json.loads(record.value) if decode else record.value
                    collected.by_key[key].append(value)
        return collected
    finally:
        await consumer.stop()


async def create_topic(bootstrap: str, name: str, partitions: int = 1, **configs: str) -> None:
    """A topic made outside headway (a tenant's reply topic), with topic configs by name."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    finally:
        await admin.close()


async def committed(settings: Settings, tp: TopicPartition) -> int:
    """The group's committed offset, read by a consumer that never joins the group."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        offset = await reader.committed(tp)
    finally:
        await reader.stop()
    return offset if offset is not None else -1


async def eventually(condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` passes (False)."""
    for _ in range(max(1, round(timeout_s / 0.05))):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


def point_cli_at(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """``headway`` commands run in-process (CliRunner) use this test's broker, topics and
    ledger."""
    for name, value in {
        "HEADWAY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "HEADWAY_TOPIC_PREFIX": settings.topic_prefix,
        "HEADWAY_DATABASE_URL": settings.database_url,
    }.items():
        monkeypatch.setenv(name, value)
