"""A worker's JSON log lines about a job name the job, its tenant and its trace (the producer's
trace id), and a secret in the config's environment never reaches a line. Real broker, HTTP
and database; the root logger's output captured through the worker's JSON formatter."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from broker.client import HeadwayClient
from broker.config import development_config
from broker.settings import Settings
from tests.helpers import chat_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer
from workers.pipeline.job_pipeline import JobPipeline
from workers.telemetry.logs import JsonFormatter, redact_secrets
from workers.telemetry.tracing import Tracing

SECRET = "tenant-signing-secret-7f3a9c"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


async def test_a_jobs_log_lines_name_it_and_its_trace_and_hide_secrets(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    json_lines: io.StringIO,
) -> None:
    monkeypatch.setenv("ACME_SIGNING_SECRET", SECRET)
    config = development_config(simulator.base_url)
    redact_secrets([SECRET])  # what `headway worker` does with config.secret_env_names()
    original = JobPipeline.handle

    async def handle(
        self: JobPipeline, record: Any, intake: Any = None, replay: Any = None
    ) -> None:
        if b'"leaky"' in record.value:
            raise RuntimeError(f"bug while holding {SECRET} and Bearer abcdef123456")
        await original(self, record, intake, replay)

    monkeypatch.setattr(JobPipeline, "handle", handle)
    producer_spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(producer_spans))
    settings = make_settings(database_url=sqlite_url)
    tracing = Tracing.to(InMemorySpanExporter())
    async with (
        running_worker(settings, config, tracing=tracing),
        HeadwayClient(settings, tracer_provider=provider) as client,
    ):
        await client.submit(chat_job("leaky"))
        await read_topic(settings.kafka_bootstrap or "", settings.topics.results, until_keys=1)
    tracing.close()
    (submitted,) = producer_spans.get_finished_spans()
    text = json_lines.getvalue()
    assert SECRET not in text and "abcdef123456" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    about = [line for line in lines if "raised" in line["message"]]
    assert len(about) == 3  # the bounded retries of a poison job
    for line in about:
        assert line["job_id"] == "leaky" and line["tenant"] == "demo"
        assert line["trace_id"] == format(submitted.context.trace_id, "032x")
        assert "[REDACTED]" in line["exception"]
