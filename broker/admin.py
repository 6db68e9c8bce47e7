"""``headway topics create``: create every headway topic, idempotently."""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from broker.config import HeadwayConfig
from broker.kafka import require_bootstrap
from broker.settings import Settings


def wanted_topics(settings: Settings, config: HeadwayConfig | None = None) -> dict[str, int]:
    """Topic name → partition count: the job lanes and retry take ``job_partitions``."""
    topics = settings.topics
    wanted = {name: settings.job_partitions for name in topics.job_lanes}
    wanted[topics.retry] = settings.job_partitions
    for name in (topics.results, topics.usage, topics.dlq, topics.control):
        wanted[name] = settings.internal_partitions
    for tenant in config.tenants.values() if config else []:
        if tenant.results_topic:
            wanted.setdefault(tenant.results_topic, settings.internal_partitions)
    return wanted


async def create_topics(settings: Settings, config: HeadwayConfig | None = None) -> list[str]:
    """Create the missing topics; return the names created (empty when all existed)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=require_bootstrap(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, partitions, settings.replication_factor)
            for name, partitions in wanted_topics(settings, config).items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile elsewhere
                await admin.create_topics(missing)
        return [topic.name for topic in missing]
    finally:
        await admin.close()
