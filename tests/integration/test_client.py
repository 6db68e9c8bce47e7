"""The producer SDK: validated jobs in, one batch's results out as an async iterator."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from broker.client import HeadwayClient, sign
from broker.config import development_config
from broker.settings import Settings
from tests.helpers import chat_job, running_worker
from workers.simulator import SimulatorServer


async def test_results_yields_only_the_batch_asked_for_and_skips_foreign_records(
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
        await producer.stop()
        seen = [r async for r in client.results("B", idle_timeout_s=3)]
    assert sorted(r.job_id for r in seen) == ["b-0", "b-1", "b-2"]
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
