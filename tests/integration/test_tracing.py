"""One trace from the producer to the result: the SDK's span, the worker's job span and its
stages (queue wait, quota wait, ledger, routing, the provider call over HTTP, publish) and the
result record's ``traceparent`` share one trace id. Real broker, HTTP and database; spans are
collected by in-memory exporters."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from broker.client import HeadwayClient
from broker.config import HeadwayConfig, TenantConfig, development_config
from broker.settings import Settings
from tests.helpers import chat_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer
from workers.telemetry.tracing import Tracing

STAGES = {
    "headway job",
    "headway queue_wait",
    "headway quota_wait",
    "headway ledger claim",
    "headway route",
    "headway provider",
    "POST",
    "headway ledger finish",
    "headway publish",
}


def limited_config(simulator: SimulatorServer) -> HeadwayConfig:
    """The development config with an rpm limit on the demo tenant (so admission runs)."""
    config = development_config(simulator.base_url)
    tenants = {**config.tenants, "demo": TenantConfig(rpm=60_000)}
    return config.model_copy(update={"tenants": tenants})


def producer_tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def trace_id_of(traceparent: bytes) -> int:
    return int(traceparent.decode().split("-")[1], 16)


def header(record: object, name: str) -> bytes | None:
    return dict(getattr(record, "headers", None) or ()).get(name)


async def test_one_trace_id_runs_from_the_producer_through_the_worker_to_the_result(
    make_settings: Callable[..., Settings], database_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=database_url)
    client_provider, client_spans = producer_tracing()
    worker_spans = InMemorySpanExporter()
    tracing = Tracing.to(worker_spans)
    async with (
        running_worker(settings, limited_config(simulator), tracing=tracing),
        HeadwayClient(settings, tracer_provider=client_provider) as client,
    ):
        await client.submit(chat_job("traced"))
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=1
        )
    tracing.close()

    (submitted,) = client_spans.get_finished_spans()
    assert submitted.kind is SpanKind.PRODUCER
    trace_id = submitted.context.trace_id
    spans: list[ReadableSpan] = [
        s for s in worker_spans.get_finished_spans() if s.context.trace_id == trace_id
    ]
    assert {s.name for s in spans} >= STAGES, {s.name for s in spans}
    (job,) = [s for s in spans if s.name == "headway job"]
    assert job.kind is SpanKind.CONSUMER
    assert job.parent is not None and job.parent.span_id == submitted.context.span_id
    assert job.attributes is not None
    assert job.attributes["headway.job_id"] == "traced"
    assert job.attributes["headway.tenant"] == "demo"
    (post,) = [s for s in spans if s.name == "POST"]
    provider_span = next(s for s in spans if s.name == "headway provider")
    assert post.parent is not None and post.parent.span_id == provider_span.context.span_id
    (record,) = results.records
    traceparent = header(record, "traceparent")
    assert traceparent is not None and trace_id_of(traceparent) == trace_id
    assert results.by_key["traced"][0]["status"] == "succeeded"


async def test_submit_many_puts_its_jobs_in_one_trace_and_each_job_gets_its_own_span(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url)
    client_provider, client_spans = producer_tracing()
    worker_spans = InMemorySpanExporter()
    tracing = Tracing.to(worker_spans)
    config = development_config(simulator.base_url)
    async with (
        running_worker(settings, config, tracing=tracing),
        HeadwayClient(settings, tracer_provider=client_provider) as client,
    ):
        await client.submit_many(chat_job(f"many-{i}") for i in range(5))
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=5
        )
    tracing.close()
    (submitted,) = client_spans.get_finished_spans()
    assert submitted.attributes is not None
    assert submitted.attributes["messaging.batch.message_count"] == 5
    jobs = [s for s in worker_spans.get_finished_spans() if s.name == "headway job"]
    assert len(jobs) == 5
    assert {s.context.trace_id for s in jobs} == {submitted.context.trace_id}
    assert len({s.context.span_id for s in jobs}) == 5
    for record in results.records:
        traceparent = header(record, "traceparent")
        assert traceparent is not None and trace_id_of(traceparent) == submitted.context.trace_id


async def test_without_tracing_no_spans_are_made_and_results_carry_no_trace_header(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    """Off by default: the worker adds nothing, and a job without a traceparent is fine."""
    settings = make_settings(database_url=sqlite_url)
    async with (
        running_worker(settings, development_config(simulator.base_url)) as worker,
        HeadwayClient(settings) as client,
    ):
        assert not worker.tracing.enabled
        await client.submit(chat_job("untraced"))
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=1
        )
    (record,) = results.records
    assert header(record, "traceparent") is None
