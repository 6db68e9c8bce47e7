"""A job that makes headway's own code raise is retried a bounded number of times, then
dead-lettered; a runner never dies, so the jobs behind it keep flowing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from broker.client import HeadwayClient
from broker.config import development_config
from broker.settings import Settings
from broker.topics import HEADER_ERROR
from tests.helpers import chat_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer
from workers.pipeline.job_pipeline import JobPipeline
from workers.settle.publisher import Publisher


def explode_on(job_ids: set[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls: dict[str, int] = {}
    original = JobPipeline.handle

    async def handle(
        self: JobPipeline, record: Any, intake: Any = None, replay: Any = None
    ) -> None:
        job_id = json.loads(record.value)["job_id"]
        if job_id in job_ids:
            calls[job_id] = calls.get(job_id, 0) + 1
            raise RuntimeError(f"bug triggered by {job_id}")
        await original(self, record, intake, replay)

    monkeypatch.setattr(JobPipeline, "handle", handle)
    return calls


async def test_a_poison_job_is_dead_lettered_after_bounded_retries(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = explode_on({"poison"}, monkeypatch)
    settings = make_settings(database_url=sqlite_url, concurrency=1, job_partitions=1)
    async with (
        running_worker(settings, development_config(simulator.base_url)),
        HeadwayClient(settings) as client,
    ):
        await client.submit_many([chat_job("poison"), *(chat_job(f"after-{i}") for i in range(5))])
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=6
        )
        dlq = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.dlq, until_keys=1, decode=False
        )
    assert calls == {"poison": 3}
    assert set(results.by_key) == {"poison", *(f"after-{i}" for i in range(5))}
    poisoned = results.by_key["poison"][0]
    assert poisoned["status"] == "failed"
    assert poisoned["error"]["code"] == "internal_error"
    # the error's type, never its text (it may hold what the job made headway read)
    assert "RuntimeError" in poisoned["error"]["message"]
    assert "bug triggered by poison" not in poisoned["error"]["message"]
    assert dict(dlq.records[0].headers)[HEADER_ERROR] == b"internal_error: RuntimeError"


async def test_when_even_the_dead_letter_fails_the_runner_survives_and_the_job_stays_unfinished(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    explode_on({"doomed"}, monkeypatch)

    async def no_dlq(self: Publisher, record: Any, reason: str) -> Any:
        raise ConnectionError("Kafka unreachable")

    monkeypatch.setattr(Publisher, "dead_letter", no_dlq)
    settings = make_settings(database_url=sqlite_url, concurrency=1, job_partitions=1)
    async with (
        running_worker(settings, development_config(simulator.base_url)) as worker,
        HeadwayClient(settings) as client,
    ):
        await client.submit_many([chat_job("doomed"), *(chat_job(f"next-{i}") for i in range(3))])
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=3
        )
        assert set(results.by_key) == {f"next-{i}" for i in range(3)}
        assert worker.tracker.unfinished() >= 1  # "doomed" holds the partition's commit point
