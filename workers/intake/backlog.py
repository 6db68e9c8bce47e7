"""A batch's jobs still in the lanes: the records past the workers' committed offsets.

A job not started is in one of four places: unread in a lane, fetched and buffered in a
worker's memory, parked on the retry topic (its tenant was over a quota or its budget), or
spilled to the ledger. The first three are exactly the records of the lanes and the retry
topic at or past the consumer group's committed offsets (an offset is committed only once
every job before it has finished, been spilled or been parked), so reading them from there to
their ends finds those jobs — with records already started or spilled, which the ledger tells
apart (:func:`workers.ledger.queries.batch_status`). Records are matched on their identity
alone (:func:`~workers.intake.parsing.identity_of`); one whose identity cannot be read is not
counted (it is dead-lettered when a worker reaches it, never run). A job parked while the
read is under way may be missed: partitions are read one after another, not at one instant.

The read commits nothing and joins no group; it stops at ``max_records`` (``complete`` false)
and at records written after it began, so it ends while producers go on writing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from broker.kafka import read_to_ends, require_bootstrap, topic_partitions
from broker.settings import Settings
from workers.intake.parsing import identity_of
from workers.ledger.records import Key


@dataclass(frozen=True, slots=True)
class LaneBacklog:
    """What a read of the lanes found of one batch."""

    jobs: frozenset[Key]  # the batch's jobs in records past the committed offsets
    records: int  # records read, of every batch
    complete: bool  # every lane partition was read to its end (false: stopped at the limit)


async def batch_in_lanes(
    settings: Settings, batch_id: str, tenant: str | None = None, max_records: int = 1_000_000
) -> LaneBacklog:
    """The jobs of ``batch_id`` (of ``tenant``, when given) in the lanes' records at or past the
    consumer group's committed offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=require_bootstrap(settings),
        group_id=settings.consumer_group,  # to ask its committed offsets; it never joins
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # a committed offset retention has passed: the log start
        max_partition_fetch_bytes=max(settings.max_message_bytes, 1 << 20),
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions: list[TopicPartition] = []
        for topic in [*settings.topics.job_lanes, settings.topics.retry]:
            partitions += await topic_partitions(consumer, topic)
        consumer.assign(partitions)
        cutoff_ms = int(time.time() * 1000)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        for tp in partitions:
            committed = await consumer.committed(tp)
            if committed is not None:
                consumer.seek(tp, committed)
        found: set[Key] = set()
        records = 0
        async for record in read_to_ends(consumer, ends, cutoff_ms):
            if records >= max_records:
                return LaneBacklog(frozenset(found), records, complete=False)
            records += 1
            identity = identity_of(record.value, settings.max_message_bytes)
            if identity is None or identity.batch_id != batch_id:
                continue
            if tenant is None or identity.tenant == tenant:
                found.add((identity.tenant, identity.job_id))
        return LaneBacklog(frozenset(found), records, complete=True)
    finally:
        await consumer.stop()
