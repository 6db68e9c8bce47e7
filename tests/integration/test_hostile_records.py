"""Records any Kafka client can write never stop a worker or stall a partition: header names
that are not UTF-8, null header values (tracing on), absent keys. Each ends as a result or a
dead letter with a reason; the partition's committed offset reaches its end; the valid jobs
around them succeed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from aiokafka import TopicPartition
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from broker.config import development_config
from broker.settings import Settings
from broker.topics import (
    HEADER_ERROR,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_TOPIC,
    HEADER_TRACEPARENT,
    HEADER_TRACESTATE,
)
from schemas.jobs import Priority
from tests.helpers import chat_job, committed, read_topic, running_worker
from tests.hostile import Header, RawName, hostile_producer, send_all
from workers.simulator import SimulatorServer
from workers.tracing import Tracing


async def committed_reaches(settings: Settings, tp: TopicPartition, end: int) -> int:
    """The group's committed offset of ``tp`` once it is ``end`` (or after 60 s)."""
    offset = -1
    for _ in range(300):
        offset = await committed(settings, tp)
        if offset == end:
            break
        await asyncio.sleep(0.2)
    return offset


def job_bytes(job_id: str) -> bytes:
    return json.dumps(chat_job(job_id)).encode()


async def test_undecodable_header_names_and_null_header_values_are_survived(
    make_settings: Callable[..., Settings], database_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=database_url, job_partitions=1)
    topic = settings.topics.jobs(Priority.NORMAL)
    records: list[tuple[bytes, bytes, list[Header]]] = []
    hostile: list[list[Header]] = [
        [(RawName(b"\xff\xfe"), b"x")],  # not UTF-8: aiokafka cannot decode the record
        [(HEADER_TRACEPARENT, None), (HEADER_TRACESTATE, None)],
        [(RawName(b"ok"), b"1"), (RawName(b"\xc3\x28"), None)],  # a bad name after a good one
        [(HEADER_SOURCE_TOPIC, None), ("x-null", None)],
    ]
    for i in range(12):
        records.append((f"ok-{i}".encode(), job_bytes(f"ok-{i}"), []))
        if i < len(hostile):
            records.append((f"h-{i}".encode(), job_bytes(f"h-{i}"), hostile[i]))
    tracing = Tracing.to(InMemorySpanExporter())
    async with running_worker(
        settings, development_config(simulator.base_url), tracing=tracing
    ) as worker:
        async with hostile_producer(settings.kafka_bootstrap or "") as producer:
            await send_all(producer, topic, records)
        end = len(records)
        tp = TopicPartition(topic, 0)
        offset = await committed_reaches(settings, tp, end)
        bootstrap = settings.kafka_bootstrap or ""
        results = await read_topic(bootstrap, settings.topics.results, until_keys=14)
        dlq = await read_topic(
            bootstrap, settings.topics.dlq, until_keys=1, until_records=2, decode=False
        )
        assert worker.fetcher is not None
        undecodable = worker.fetcher.undecodable
    tracing.close()

    assert offset == end, f"committed {offset}, the partition ends at {end}"
    assert undecodable == 2
    for i in range(12):
        assert results.by_key[f"ok-{i}"][0]["status"] == "succeeded"
    for job_id in ("h-1", "h-3"):  # null values are read as absent: the jobs run
        assert results.by_key[job_id][0]["status"] == "succeeded"
    letters = [dict(r.headers) for r in dlq.records]
    reasons = [h[HEADER_ERROR].decode() for h in letters]
    assert len(reasons) == 2 and all("undecodable record" in r for r in reasons), reasons
    assert all(h[HEADER_SOURCE_TOPIC].decode() == topic for h in letters)
    offsets = sorted(int(h[HEADER_SOURCE_OFFSET]) for h in letters)
    assert offsets == [1, 5]  # h-0 and h-2, where they were written
