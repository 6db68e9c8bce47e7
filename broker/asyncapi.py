"""The AsyncAPI description of headway's topics, built with FastStream from the same models
and topic names the code uses (so it cannot drift from them).

The worker's hot path consumes with aiokafka directly (see docs/architecture.md); the FastStream
broker here is never connected: its subscribers and publishers are the specification.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from broker.settings import Settings
from broker.topics import LANES, Topics
from schemas.alerts import AlertEvent
from schemas.control import ControlCommand
from schemas.jobs import JobRequest
from schemas.results import JobResult, UsageEvent

VERSION = "1.0.0"


def describe(topics: Topics) -> KafkaBroker:
    """A FastStream broker whose subscribers and publishers are headway's public topics."""
    broker = KafkaBroker("localhost:9092", description="headway's Kafka topics (CONTRACT.md §1)")

    for lane in LANES:

        async def job(message: JobRequest) -> None:  # documentation only
            """A job to run; key = job_id."""

        broker.subscriber(
            topics.jobs(lane),
            title=f"{topics.jobs(lane)}:JobRequest",
            description=f"{lane.value}-priority jobs, written by producers; key = job_id; "
            "optional headers: traceparent/tracestate (W3C trace context), headway-signature",
        )(job)

    async def control(message: ControlCommand) -> None:  # documentation only
        """An operator command; key = tenant."""

    broker.subscriber(topics.control, title=f"{topics.control}:ControlCommand")(control)
    broker.publisher(
        topics.results,
        title=f"{topics.results}:JobResult",
        description="one terminal result per (tenant, job_id); key = job_id; headers "
        "headway-tenant and headway-batch (absent: no batch) name whose and which batch, "
        "and traceparent continues the job's trace when tracing is on; readers ignore "
        "fields they do not know",
        schema=JobResult,
    )
    broker.publisher(
        topics.usage,
        title=f"{topics.usage}:UsageEvent",
        description="one per provider call that returned usage, one per cache hit; key = tenant",
        schema=UsageEvent,
    )
    broker.publisher(
        topics.alerts,
        title=f"{topics.alerts}:AlertEvent",
        description="a budget crossed a threshold, was exhausted, or reset; key = tenant; one "
        "event_id per alert (dedupe by it); readers ignore fields they do not know",
        schema=AlertEvent,
    )
    broker.publisher(
        topics.dlq,
        title=f"{topics.dlq}:DeadLetter",
        description="the original key and bytes, with headers headway-error, "
        "headway-source-topic, headway-source-offset",
        schema=bytes,
    )
    return broker


def specification(settings: Settings | None = None) -> Any:
    topics = (settings or Settings()).topics
    return AsyncAPI(
        describe(topics),
        title="headway",
        version=VERSION,
        description="Kafka-based asynchronous AI job broker: jobs in, results and usage out.",
        schema_version="3.0.0",
    ).to_specification()


DOCUMENT = Path(__file__).parents[1] / "docs" / "asyncapi.yaml"


def render() -> str:
    """The committed document: the default topic prefix."""
    document = specification(Settings(topic_prefix="headway")).to_jsonable()
    text: str = yaml.safe_dump(document, sort_keys=True, allow_unicode=True, width=100)
    return text


if __name__ == "__main__":
    DOCUMENT.write_text(render())
    print(f"wrote {DOCUMENT}")
