"""The producer SDK: validated jobs in, one batch's results out as an async iterator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from broker.admin import create_topics
from broker.client import HeadwayClient, sign
from broker.config import development_config
from broker.settings import Settings
from schemas.jobs import Priority
from tests.helpers import chat_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer


async def test_results_yields_only_the_batch_asked_for_skips_foreign_records_reads_newer_ones(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url)
    async with (
        running_worker(settings, development_config(simulator.base_url)),
        HeadwayClient(settings) as client,
    ):
        await client.submit_many(chat_job(f"a-{i}", batch_id="A") for i in range(5))
        await client.submit_many(chat_job(f"b-{i}", batch_id="B") for i in range(3))
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        await producer.send_and_wait(settings.topics.results, b"not a result", key=b"x")
        newer = {  # a result from a newer headway, with a field this one does not know
            "job_id": "b-9",
            "tenant": "demo",
            "batch_id": "B",
            "status": "succeeded",
            "completed_at": "2026-12-02T00:00:00Z",
            "region": "eu-west",
        }
        await producer.send_and_wait(settings.topics.results, json.dumps(newer).encode())
        await producer.stop()
        seen = [r async for r in client.results("B", tenant="demo", idle_timeout_s=3)]
    assert sorted(r.job_id for r in seen) == ["b-0", "b-1", "b-2", "b-9"]
    assert all(r.status.value == "succeeded" for r in seen)


async def test_submit_validates_before_publishing(make_settings: Callable[..., Settings]) -> None:
    async with HeadwayClient(make_settings()) as client:
        with pytest.raises(ValidationError, match="kind"):
            await client.submit(chat_job("bad", kind="image"))


def test_signatures_are_hmac_sha256_of_the_exact_bytes() -> None:
    import hashlib
    import hmac

    value = b'{"job_id":"j"}'
    expected = hmac.new(b"secret", value, hashlib.sha256).hexdigest()
    assert sign(value, "secret") == f"v1={expected}"


async def test_submit_many_puts_each_job_on_its_ids_partition_in_submission_order(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    await create_topics(settings, development_config("http://unused"))
    async with HeadwayClient(settings) as client:
        assert await client.submit_many(chat_job(f"o-{i}") for i in range(3000)) == 3000
        reference = await (
            await client.producer.send(settings.topics.jobs(Priority.NORMAL), b"{}", key=b"o-7")
        )
    seen = await read_topic(
        settings.kafka_bootstrap or "", settings.topics.jobs(Priority.NORMAL), until_keys=3000
    )
    assert seen.distinct() == 3000
    # the partition any Kafka producer gives the key, and each partition in submission order
    assert {r.partition for r in seen.records if r.key == b"o-7"} == {reference.partition}
    by_partition: dict[int, list[int]] = {}
    for record in seen.records:
        if record.value != b"{}":
            by_partition.setdefault(record.partition, []).append(int(record.key[2:]))
    assert len(by_partition) > 1
    assert all(ids == sorted(ids) for ids in by_partition.values())


async def test_a_cancelled_submit_does_not_cancel_deliveries_other_submits_share(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(producer_linger_ms=500)
    await create_topics(settings, development_config("http://unused"))
    async with HeadwayClient(settings) as client:
        lone = asyncio.create_task(client.submit(chat_job("lone")))
        await asyncio.sleep(0.05)  # appended; its batch lingers
        lone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await lone
        # 200 jobs over 12 partitions: some join the lone job's batch and wait on its delivery
        assert await client.submit_many(chat_job(f"b-{i}") for i in range(200)) == 200
    seen = await read_topic(
        settings.kafka_bootstrap or "", settings.topics.jobs(Priority.NORMAL), until_keys=201
    )
    assert seen.distinct() == 201  # the cancelled job was appended already: it went too
