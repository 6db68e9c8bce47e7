"""The worker's traces: a span per job, continuing the producer's trace, with its stages.

    headway job (CONSUMER, child of the job record's ``traceparent``)
    ├── headway queue_wait      record timestamp → a runner takes the job
    ├── headway quota_wait      admission: rpm/tpm/in-flight/budget
    ├── headway ledger claim
    ├── headway route           the deployment plan
    ├── headway provider        the calls, retries and failovers
    │   └── POST                each HTTP call (httpx instrumented)
    ├── headway ledger finish
    └── headway publish         the result record carries this trace's ``traceparent``

Exporters follow OpenTelemetry's standard variables: ``OTEL_TRACES_EXPORTER`` (``otlp``,
``console`` or ``none``; default ``none``, and ``console`` under ``headway dev``),
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` and ``…_HEADERS``,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``
and ``OTEL_SDK_DISABLED``. Off, every hook here is a shared null context: no cost per job.
The worker keeps its own TracerProvider (it does not touch the global one).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import httpx
from aiokafka import ConsumerRecord
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from broker.errors import ConfigError
from broker.tracing import Headers, context_from, trace_headers
from schemas.jobs import JobRequest

SERVICE_NAME = "headway-worker"
EXPORTERS = ("otlp", "console", "none")
_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter | None:
    if name == "none":
        return None
    if name == "console":
        return ConsoleSpanExporter(service_name=SERVICE_NAME)
    if name == "otlp":
        protocol = environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        )
        if protocol != "http/protobuf":
            raise ConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL: headway exports OTLP over http/protobuf, not "
                f"{protocol!r} (collectors listen for it on port 4318)"
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # endpoint, headers, timeout: from the OTEL_* variables
    raise ConfigError(f"OTEL_TRACES_EXPORTER: {name!r} is not one of {', '.join(EXPORTERS)}")


class Tracing:
    """``Tracing.from_env(os.environ)``, ``Tracing.off()``, or ``Tracing.to(exporter)``."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self.enabled = provider is not None
        self._tracer = provider.get_tracer("headway.worker") if provider is not None else None

    @classmethod
    def off(cls) -> Tracing:
        return cls()

    @classmethod
    def from_env(cls, environ: Mapping[str, str], default_exporter: str = "none") -> Tracing:
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls.off()
        names = environ.get("OTEL_TRACES_EXPORTER", "").strip() or default_exporter
        exporters = [
            e for n in names.split(",") if (e := _exporter(n.strip().lower(), environ)) is not None
        ]
        if not exporters:
            return cls.off()
        provider = TracerProvider(resource=_resource())
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    @classmethod
    def to(cls, exporter: SpanExporter) -> Tracing:
        """Every span to ``exporter`` as it ends (tests: an in-memory exporter)."""
        provider = TracerProvider(resource=_resource())
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return cls(provider)

    def close(self) -> None:
        """Export what is buffered and stop (the worker's exit)."""
        if self.provider is not None:
            self.provider.shutdown()

    def instrument(self, client: httpx.AsyncClient) -> None:
        """A span for each HTTP call of the shared provider client (when tracing is on)."""
        if self.provider is None:
            return
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)

    # -- spans --------------------------------------------------------------------------------

    def job(self, record: ConsumerRecord[bytes, bytes]) -> contextlib.AbstractContextManager[Any]:
        """The job's span, current until the block ends, a child of the record's context."""
        if self._tracer is None:
            return _OFF
        return self._job(self._tracer, record)

    @staticmethod
    @contextlib.contextmanager
    def _job(tracer: trace.Tracer, record: ConsumerRecord[bytes, bytes]) -> Iterator[None]:
        parent = context_from(record.headers)
        attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": record.topic,
            "messaging.destination.partition.id": str(record.partition),
            "messaging.kafka.offset": record.offset,
        }
        kind = trace.SpanKind.CONSUMER
        with tracer.start_as_current_span(
            "headway job", context=parent, kind=kind, attributes=attributes
        ):
            if record.timestamp > 0:
                span = tracer.start_span("headway queue_wait", start_time=record.timestamp * 10**6)
                span.end()
            yield

    def span(self, name: str) -> contextlib.AbstractContextManager[Any]:
        """A child of the current span for one stage of the job (``headway <name>``)."""
        if self._tracer is None:
            return _OFF
        return self._tracer.start_as_current_span(f"headway {name}")

    def describe(self, job: JobRequest) -> None:
        """Name the job on the current span (its id, tenant, route, batch)."""
        if self._tracer is None:
            return
        span = trace.get_current_span()
        span.set_attribute("headway.job_id", job.job_id)
        span.set_attribute("headway.tenant", job.tenant)
        span.set_attribute("headway.route", job.route)
        if job.batch_id is not None:
            span.set_attribute("headway.batch_id", job.batch_id)

    def headers(self) -> Headers:
        """The current span's context as record headers (none when tracing is off)."""
        if self._tracer is None:
            return []
        return trace_headers()


def _resource() -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win; else ``headway-worker``."""
    resource = Resource.create({"service.version": _version()})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    return resource


def _version() -> str:
    try:
        return version("headway")
    except PackageNotFoundError:
        return "0"
