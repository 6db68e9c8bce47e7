"""A result that cannot be published where it was asked for never stalls its partition and never
repeats its provider call: a missing or too-small reply topic sends it to the tenant's results
topic (saying why in its headers); a result larger than the record limit ends
``failed``/``result_too_large`` with its usage kept; an embedding job whose result certainly
exceeds the limit is refused before its call. Over the real broker (Tansu or Apache Kafka)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import TopicPartition

from broker.admin import create_topics
from broker.client import HeadwayClient
from broker.config import HeadwayConfig, development_config, parse_config
from broker.errors import ProducerFailed
from broker.settings import Settings
from broker.topics import HEADER_ERROR, HEADER_REDIRECTED_FROM
from schemas.jobs import Priority
from tests.helpers import (
    chat_job,
    committed,
    create_topic,
    embedding_job,
    read_topic,
    running_worker,
)
from workers.devstack.simulator import SimulatorServer
from workers.runtime.worker import Worker

pytestmark = pytest.mark.integration


def config_with_replies(simulator_url: str) -> HeadwayConfig:
    base = development_config(simulator_url)
    raw = base.model_dump(mode="json", exclude_none=True)
    raw["tenants"]["demo"]["reply_topics"] = ["replies.*"]
    return parse_config(raw)


async def all_committed(settings: Settings, jobs: int) -> bool:
    """Every job of the lane's one partition is committed (nothing holds the partition)."""
    tp = TopicPartition(settings.topics.jobs(Priority.NORMAL), 0)
    for _ in range(100):
        if await committed(settings, tp) >= jobs:
            return True
        await asyncio.sleep(0.1)
    return False


@pytest.mark.apache  # Tansu creates a topic on first use; Apache Kafka here does not
async def test_a_result_whose_reply_topic_does_not_exist_goes_to_the_results_topic(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url, job_partitions=1)
    missing = f"replies.{settings.topic_prefix}.nowhere"
    async with running_worker(settings, config_with_replies(simulator.base_url)):
        async with HeadwayClient(settings) as client:
            await client.submit(chat_job("lost-reply", reply_topic=missing))
            await client.submit_many([chat_job(f"after-{i}") for i in range(3)])
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=4
        )
        assert await all_committed(settings, 4)
    assert results.by_key["lost-reply"][0]["status"] == "succeeded"
    [record] = [r for r in results.records if r.key == b"lost-reply"]
    headers = dict(record.headers)
    assert headers[HEADER_REDIRECTED_FROM] == missing.encode()
    assert b"does not exist" in headers[HEADER_ERROR]
    assert simulator.stats.calls == 4  # nothing called twice


@pytest.mark.apache  # Tansu does not enforce a topic's max.message.bytes
async def test_a_result_too_large_for_its_reply_topic_goes_to_the_results_topic(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url, job_partitions=1)
    bootstrap = settings.kafka_bootstrap or ""
    small = f"replies.{settings.topic_prefix}.small"
    await create_topic(bootstrap, small, **{"max.message.bytes": "1024"})
    big = embedding_job("too-big-for-reply", input=[f"text {i}" for i in range(64)])
    async with running_worker(settings, config_with_replies(simulator.base_url)):
        async with HeadwayClient(settings) as client:
            await client.submit({**big, "reply_topic": small})
            await client.submit(chat_job("after"))
        results = await read_topic(bootstrap, settings.topics.results, until_keys=2)
        assert await all_committed(settings, 2)
    assert results.by_key["too-big-for-reply"][0]["status"] == "succeeded"
    [record] = [r for r in results.records if r.key == b"too-big-for-reply"]
    assert dict(record.headers)[HEADER_REDIRECTED_FROM] == small.encode()
    assert simulator.stats.calls == 2


async def test_a_result_over_the_record_limit_ends_result_too_large_with_its_usage_kept(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    limit = 64 * 1024
    settings = make_settings(database_url=sqlite_url, job_partitions=1, max_message_bytes=limit)
    # 2,048 inputs of the simulator's 16 dimensions: ~350 KB of JSON, unknowable at intake
    big = embedding_job("huge", input=[f"t{i}" for i in range(2048)])
    async with running_worker(settings, development_config(simulator.base_url)):
        async with HeadwayClient(settings) as client:
            await client.submit(big)
            await client.submit(chat_job("after"))
        bootstrap = settings.kafka_bootstrap or ""
        results = await read_topic(bootstrap, settings.topics.results, until_keys=2)
        usage = await read_topic(bootstrap, settings.topics.usage, until_keys=1)
        assert await all_committed(settings, 2)
    huge = results.by_key["huge"][0]
    assert huge["status"] == "failed" and huge["output"] is None
    assert huge["error"]["code"] == "result_too_large"
    assert f"{limit:,} bytes" in huge["error"]["message"]
    assert huge["usage"]["input_tokens"] > 0 and huge["cost_usd"] > 0  # the call was paid for
    assert any(e["job_id"] == "huge" for e in usage.by_key["demo"])
    assert results.by_key["after"][0]["status"] == "succeeded"
    assert simulator.stats.embedding_calls == 1  # stored as ended: never called again


async def test_an_embedding_job_whose_result_cannot_fit_is_refused_before_its_call(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url, job_partitions=1)
    # the example: 2,048 inputs × 1,536 dimensions ≈ tens of MB of JSON
    job = embedding_job("backfill-1", input=[f"doc {i}" for i in range(2048)])
    job["params"] = {"dimensions": 1536}
    async with running_worker(settings, development_config(simulator.base_url)):
        async with HeadwayClient(settings) as client:
            await client.submit(job)
            await client.submit(chat_job("after"))
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=2
        )
        assert await all_committed(settings, 2)
    refused = results.by_key["backfill-1"][0]
    assert refused["status"] == "rejected"
    assert refused["error"]["code"] == "invalid_request"
    assert "2048 inputs × 1536 dimensions" in refused["error"]["message"]
    assert "HEADWAY_MAX_MESSAGE_BYTES" in refused["error"]["message"]
    assert "backfill-1" not in simulator.stats.jobs


async def test_a_producer_that_stopped_for_good_stops_the_worker_instead_of_retrying_for_ever(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url)
    await create_topics(settings, development_config(simulator.base_url))
    stop = asyncio.Event()
    async with Worker(settings, development_config(simulator.base_url)) as worker:
        run = asyncio.create_task(worker.run(stop))
        assert worker.producer is not None
        worker.producer._sender.sender_task.cancel()  # as a fatal error in aiokafka's sender
        with pytest.raises(ProducerFailed, match="sender stopped"):
            await asyncio.wait_for(run, 10)
