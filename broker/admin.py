"""``headway topics create``: create every headway topic, idempotently, and say which existing
topics fall short of what was asked.

Each topic is created with the replication factor, ``min.insync.replicas``, retention and
``max.message.bytes`` of :class:`TopicPlan`. Unset, the replication follows the cluster: 3 (and
``min.insync.replicas`` 2, so an acknowledged record survives one broker's loss while the
cluster still accepts writes with one broker down) on three brokers or more, else as many as
there are brokers (and ``min.insync.replicas`` 1). A topic that exists is never changed:
fewer partitions or replicas than asked are reported, for an operator to alter.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from broker.config import HeadwayConfig
from broker.errors import ConfigError
from broker.kafka import require_bootstrap
from broker.settings import Settings

HOUR_MS = 3_600_000
# room above HEADWAY_MAX_MESSAGE_BYTES for a record's key, headers (a dead letter's reason and
# source) and the record batch's framing
RECORD_HEADROOM_BYTES = 64 * 1024
DESCRIBE_WAIT_S = 5.0  # how long a just-created topic may take to be described by every broker


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """One topic as headway wants it."""

    name: str
    partitions: int
    retention_hours: float

    def configs(self, settings: Settings, min_insync: int) -> dict[str, str]:
        return {
            "min.insync.replicas": str(min_insync),
            "retention.ms": str(round(self.retention_hours * HOUR_MS)),
            "max.message.bytes": str(settings.max_message_bytes + RECORD_HEADROOM_BYTES),
        }


@dataclass(slots=True)
class TopicsReport:
    """What ``topics create`` did and found."""

    replication_factor: int
    min_insync_replicas: int
    created: list[str] = field(default_factory=list)
    shortfalls: list[str] = field(default_factory=list)  # existing topics below the plan


def wanted_topics(settings: Settings, config: HeadwayConfig | None = None) -> list[TopicPlan]:
    """Every headway topic: the job lanes and retry take ``job_partitions``, the rest
    ``internal_partitions``; retention by what the topic holds."""
    topics = settings.topics
    jobs_hours, results_hours = settings.jobs_retention_hours, settings.results_retention_hours
    plans = [TopicPlan(name, settings.job_partitions, jobs_hours) for name in topics.job_lanes]
    plans.append(TopicPlan(topics.retry, settings.job_partitions, jobs_hours))
    for name in (topics.results, topics.usage, topics.control, topics.alerts):
        plans.append(TopicPlan(name, settings.internal_partitions, results_hours))
    plans.append(TopicPlan(topics.dlq, settings.internal_partitions, settings.dlq_retention_hours))
    names = {plan.name for plan in plans}
    for tenant in config.tenants.values() if config else []:
        if tenant.results_topic and tenant.results_topic not in names:
            names.add(tenant.results_topic)
            plans.append(
                TopicPlan(tenant.results_topic, settings.internal_partitions, results_hours)
            )
    return plans


def replication(settings: Settings, brokers: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) from the settings, else from the cluster."""
    factor = settings.replication_factor or max(1, min(3, brokers))
    if factor > brokers:
        raise ConfigError(
            f"HEADWAY_REPLICATION_FACTOR={factor} but the cluster has {brokers} broker(s)"
        )
    min_insync = settings.min_insync_replicas or (2 if factor >= 3 else 1)
    return factor, min(min_insync, factor)


async def create_topics(settings: Settings, config: HeadwayConfig | None = None) -> TopicsReport:
    """Create the missing topics; report the created ones and existing ones that fall short."""
    admin = AIOKafkaAdminClient(bootstrap_servers=require_bootstrap(settings))
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
        factor, min_insync = replication(settings, len(cluster.get("brokers", [])) or 1)
        report = TopicsReport(factor, min_insync)
        plans = wanted_topics(settings, config)
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                plan.name, plan.partitions, factor, topic_configs=plan.configs(settings, min_insync)
            )
            for plan in plans
            if plan.name not in existing
        ]
        for topic in missing:
            if await _created(admin, topic):
                report.created.append(topic.name)
            else:  # it existed after all (a broker had not listed it): check it like the rest
                existing.add(topic.name)
        present = [plan for plan in plans if plan.name in existing]
        if present:
            described = await _described(admin, [plan.name for plan in present])
            for plan in present:
                report.shortfalls += _shortfalls(plan, described.get(plan.name), factor)
        return report
    finally:
        await admin.close()


async def _created(admin: AIOKafkaAdminClient, topic: NewTopic) -> bool:
    """Create one topic: true if this call created it, false if it exists (created meanwhile,
    or a broker that had not heard of it yet answered the listing). The admin client returns
    per-topic errors in the response rather than raising them; any other error is raised."""
    response = await admin.create_topics([topic])
    for _name, code, *message in response.topic_errors:
        if code == TopicAlreadyExistsError.errno:
            return False
        if code:
            raise for_code(code)(f"{topic.name}: {message[0] if message else ''}")
    return True


async def _described(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, Any]:
    """Each topic's description; asked again (for up to ``DESCRIBE_WAIT_S``) while a broker
    that has not heard of a just-created topic answers it without partitions."""
    described: dict[str, Any] = {}
    deadline = time.monotonic() + DESCRIBE_WAIT_S
    while True:
        wanted = [name for name in names if not _has_partitions(described.get(name))]
        if not wanted or time.monotonic() >= deadline:
            return described
        described.update({d["topic"]: d for d in await admin.describe_topics(wanted)})
        if any(not _has_partitions(described.get(name)) for name in wanted):
            await asyncio.sleep(0.2)


def _has_partitions(described: Any) -> bool:
    partitions = described.get("partitions") if isinstance(described, dict) else None
    return isinstance(partitions, list) and bool(partitions)


def _shortfalls(plan: TopicPlan, described: dict[str, object] | None, factor: int) -> list[str]:
    partitions = described.get("partitions") if described else None
    if not isinstance(partitions, list) or not partitions:
        return [f"{plan.name}: could not be described"]
    found: list[str] = []
    if len(partitions) < plan.partitions:
        found.append(
            f"{plan.name}: {len(partitions)} partitions, asked for {plan.partitions} "
            "(fewer consumers can share it; add partitions with kafka-topics --alter)"
        )
    replicas = min(len(p.get("replicas", ())) for p in partitions if isinstance(p, dict))
    if replicas < factor:
        found.append(
            f"{plan.name}: replication factor {replicas}, asked for {factor} "
            "(a broker's loss can lose or stop it; reassign its partitions)"
        )
    return found
