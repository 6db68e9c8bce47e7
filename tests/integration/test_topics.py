"""`headway topics create` on a real cluster: replication and min.insync.replicas follow the
cluster (3 and 2 on three brokers, 1 and 1 on one) unless set; retention and max.message.bytes
per topic; topics that exist with fewer partitions or replicas than asked are reported, never
changed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from typer.testing import CliRunner

from broker.admin import RECORD_HEADROOM_BYTES, create_topics
from broker.settings import Settings
from schemas.jobs import Priority
from tests.apache_kafka import ApacheKafkaCluster
from tests.helpers import create_topic
from workers.cli.main import app

pytestmark = pytest.mark.integration


async def described(settings: Settings, topic: str) -> tuple[int, int, dict[str, str]]:
    """(partitions, replicas, configs) of ``topic`` as the cluster has it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        for _ in range(50):  # a topic created a moment ago may not be in every broker's metadata
            [info] = await admin.describe_topics([topic])
            partitions: list[dict[str, Any]] = info["partitions"]
            if partitions:
                break
            await asyncio.sleep(0.1)
        configs: dict[str, str] = {}
        for _ in range(50):  # and the broker asked for its configs may not know it yet either
            resource = ConfigResource(ConfigResourceType.TOPIC, topic)
            [response] = await admin.describe_configs([resource])
            [(error_code, _, _, _, entries)] = response.resources
            configs = {entry[0]: entry[1] for entry in entries}
            if error_code == 0 and configs:
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    return len(partitions), min(len(p["replicas"]) for p in partitions), configs


async def test_on_three_brokers_topics_get_three_replicas_and_two_in_sync(
    three_brokers: ApacheKafkaCluster, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(cluster=three_brokers, job_partitions=6, dlq_retention_hours=48)
    report = await create_topics(settings)
    assert (report.replication_factor, report.min_insync_replicas) == (3, 2)
    assert settings.topics.results in report.created and not report.shortfalls
    partitions, replicas, configs = await described(settings, settings.topics.dlq)
    assert (partitions, replicas) == (settings.internal_partitions, 3)
    assert configs["min.insync.replicas"] == "2"
    assert configs["retention.ms"] == str(48 * 3_600_000)
    assert configs["max.message.bytes"] == str(settings.max_message_bytes + RECORD_HEADROOM_BYTES)
    partitions, replicas, _ = await described(settings, settings.topics.jobs(Priority.HIGH))
    assert (partitions, replicas) == (6, 3)


async def test_existing_topics_that_fall_short_are_reported_and_left_alone(
    three_brokers: ApacheKafkaCluster, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(cluster=three_brokers, job_partitions=6)
    lane = settings.topics.jobs(Priority.HIGH)
    await create_topic(settings.kafka_bootstrap or "", lane, partitions=2)  # replication 1
    report = await create_topics(settings)
    assert lane not in report.created
    assert any(f"{lane}: 2 partitions, asked for 6" in s for s in report.shortfalls)
    assert any(f"{lane}: replication factor 1, asked for 3" in s for s in report.shortfalls)
    assert (await described(settings, lane))[:2] == (2, 1)  # never changed
    again = await create_topics(settings)
    assert again.created == [] and len(again.shortfalls) == 2


def test_the_cli_says_what_it_created_and_warns_about_shortfalls(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(job_partitions=3)
    for name, value in {
        "HEADWAY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "HEADWAY_TOPIC_PREFIX": settings.topic_prefix,
        "HEADWAY_CONFIG": str(settings.config),
        "HEADWAY_JOB_PARTITIONS": "3",
    }.items():
        monkeypatch.setenv(name, value or "")
    first = CliRunner().invoke(app, ["topics", "create"])
    assert first.exit_code == 0, first.output
    assert "replication 1, min.insync.replicas 1" in first.output  # one broker
    monkeypatch.setenv("HEADWAY_JOB_PARTITIONS", "5")
    second = CliRunner().invoke(app, ["topics", "create"])
    assert second.exit_code == 0, second.output
    assert "all topics exist" in second.output
    assert "3 partitions, asked for 5" in second.output
