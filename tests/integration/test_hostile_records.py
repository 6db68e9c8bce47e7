"""Records any Kafka client can write never stop a worker or stall a partition: header names
that are not UTF-8, null header values (tracing on), absent keys. Each ends as a result or a
dead letter with a reason; the partition's committed offset reaches its end; the valid jobs
around them succeed."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any

from aiokafka import TopicPartition
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from broker.config import development_config
from broker.errors import LedgerRefused
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
from tests.hostile.producer import Header, RawName, hostile_producer, send_all
from workers.devstack.simulator import SimulatorServer
from workers.ledger.records import Finish
from workers.telemetry.tracing import Tracing


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


HOSTILE_VALUES: dict[str, dict[str, Any]] = {
    # a tenant that is not a well-formed name: dead-lettered, never answered under it
    "nul-tenant": {"tenant": "x\u0000", "kind": "bogus"},
    "upper-tenant": {"tenant": "DEMO"},
    # fields kept in ledger columns: refused at intake, answered `rejected`
    "nul-route": {"route": "summ\u0000arize"},
    "nul-batch": {"batch_id": "b\u0000"},
    "ctl-batch": {"batch_id": "b\u0085"},
    "huge-version": {"template": {"name": "t", "version": 10**20}, "messages": None},
    "huge-seed": {"params": {"seed": 10**20}},
    "inf-cost": {"max_cost_usd": "1e400"},  # a number JSON can write and a float cannot hold
}


async def test_values_the_ledger_cannot_store_never_hold_up_the_jobs_flushed_with_them(
    make_settings: Callable[..., Settings], database_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=database_url, job_partitions=1)
    topic = settings.topics.jobs(Priority.NORMAL)
    records: list[tuple[bytes, bytes, list[Header]]] = []
    for i in range(20):
        records.append((f"ok-{i}".encode(), job_bytes(f"ok-{i}"), []))
    for job_id, change in HOSTILE_VALUES.items():
        body = {k: v for k, v in {**chat_job(job_id), **change}.items() if v is not None}
        value = json.dumps(body).replace('"1e400"', "1e400").encode()
        records.insert(len(records) // 2, (job_id.encode(), value, []))
    async with running_worker(settings, development_config(simulator.base_url)) as worker:
        async with hostile_producer(settings.kafka_bootstrap or "") as producer:
            await send_all(producer, topic, records)
        offset = await committed_reaches(settings, TopicPartition(topic, 0), len(records))
        bootstrap = settings.kafka_bootstrap or ""
        results = await read_topic(bootstrap, settings.topics.results, until_keys=26)
        dlq = await read_topic(bootstrap, settings.topics.dlq, until_keys=8, decode=False)
        ready = worker.readiness.ledger_is_up

    assert offset == len(records)
    assert ready
    assert all(results.by_key[f"ok-{i}"][0]["status"] == "succeeded" for i in range(20))
    for job_id in ("nul-tenant", "upper-tenant"):
        assert job_id not in results.by_key  # no result under a name that is not a tenant
    for job_id in HOSTILE_VALUES.keys() - {"nul-tenant", "upper-tenant"}:
        assert results.by_key[job_id], (job_id, sorted(results.by_key))
        result = results.by_key[job_id][0]
        assert (result["status"], result["error"]["code"]) == ("rejected", "invalid_request")
    assert set(dlq.by_key) == set(HOSTILE_VALUES)


async def test_a_job_whose_values_the_ledger_refuses_is_dead_lettered_and_answered_unstored(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url, job_partitions=1)
    topic = settings.topics.jobs(Priority.NORMAL)
    records: list[tuple[bytes, bytes, list[Header]]] = [
        (f"ok-{i}".encode(), job_bytes(f"ok-{i}"), []) for i in range(6)
    ]
    records.insert(3, (b"refuse-me", job_bytes("refuse-me"), []))
    async with running_worker(settings, development_config(simulator.base_url)) as worker:
        ledger = worker.ledger
        finish, settle = ledger.finish, ledger.settle

        async def refusing(store: Any, record: Finish) -> Any:
            if record.job_id == "refuse-me":
                raise LedgerRefused("the database refused a value of this job: out of range")
            return await store(record)

        ledger.finish = functools.partial(refusing, finish)  # type: ignore[method-assign]
        ledger.settle = functools.partial(refusing, settle)  # type: ignore[method-assign]
        async with hostile_producer(settings.kafka_bootstrap or "") as producer:
            await send_all(producer, topic, records)
        offset = await committed_reaches(settings, TopicPartition(topic, 0), len(records))
        bootstrap = settings.kafka_bootstrap or ""
        results = await read_topic(bootstrap, settings.topics.results, until_keys=7)
        dlq = await read_topic(bootstrap, settings.topics.dlq, until_keys=1, decode=False)

    assert offset == len(records)
    refused = results.by_key["refuse-me"][0]
    assert (refused["status"], refused["error"]["code"]) == ("failed", "invalid_request")
    assert "refused a value" in refused["error"]["message"]
    assert all(results.by_key[f"ok-{i}"][0]["status"] == "succeeded" for i in range(6))
    reason = dict(dlq.records[0].headers)[HEADER_ERROR].decode()
    assert reason.startswith("invalid_request: the database refused a value"), reason
