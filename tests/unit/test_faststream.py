"""headway for FastStream applications, in memory (FastStream's TestKafkaBroker): jobs go to
their lane keyed by job_id and signed; a results handler gets the JobResults of its batch and
tenant only."""

from __future__ import annotations

import json

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError

from broker.client import sign
from broker.faststream import HeadwayFastStream
from broker.topics import Topics, result_headers
from schemas.jobs import Priority
from schemas.results import JobResult

TOPICS = Topics("t")
JOB = {
    "job_id": "doc-1",
    "tenant": "acme",
    "kind": "chat",
    "route": "summarize",
    "messages": [{"role": "user", "content": "Summarise."}],
}


def result(job_id: str, tenant: str = "acme", batch: str | None = "nightly") -> bytes:
    return json.dumps(
        {
            "job_id": job_id,
            "tenant": tenant,
            "batch_id": batch,
            "status": "succeeded",
            "completed_at": "2026-12-02T00:00:00Z",
        }
    ).encode()


async def test_a_job_goes_to_its_lane_keyed_by_its_id_and_signed() -> None:
    kafka = KafkaBroker()
    headway = HeadwayFastStream(kafka, TOPICS, signing_secret="s3cret")
    seen: list[KafkaMessage] = []

    @kafka.subscriber(TOPICS.jobs(Priority.HIGH))
    async def lane(message: KafkaMessage) -> None:
        seen.append(message)

    async with TestKafkaBroker(kafka):
        request = await headway.submit({**JOB, "priority": "high"})
        with pytest.raises(ValidationError):
            await headway.submit({**JOB, "kind": "poem"})  # refused before it is published
    [message] = seen
    assert message.raw_message.key == b"doc-1"
    assert message.body == request.model_dump_json(exclude_none=True).encode()
    assert message.headers["headway-signature"] == sign(message.body, "s3cret")


async def test_a_results_handler_gets_its_batch_and_tenant_only() -> None:
    kafka = KafkaBroker()
    headway = HeadwayFastStream(kafka, TOPICS)
    handled: list[JobResult] = []

    @headway.results(group="pipeline", batch="nightly", tenant="acme")
    async def on_result(found: JobResult) -> None:
        handled.append(found)

    def headers(tenant: str, batch: str) -> dict[str, str]:
        return {name: value.decode() for name, value in result_headers(tenant, batch)}

    async with TestKafkaBroker(kafka) as broker:
        topic = TOPICS.results
        await broker.publish(result("a-1"), topic, headers=headers("acme", "nightly"))
        await broker.publish(result("o-1", batch="other"), topic, headers=headers("acme", "other"))
        await broker.publish(result("x-1", tenant="x"), topic, headers=headers("x", "nightly"))
        await broker.publish(b"\xff", topic, headers=headers("acme", "other"))  # never parsed
        await broker.publish(result("legacy-1"), topic)  # no headers: parsed and filtered
        await broker.publish(result("legacy-2", batch="other"), topic)
        await broker.publish(b"not a result", topic)
    assert [found.job_id for found in handled] == ["a-1", "legacy-1"]
