"""The worker's metrics: OpenTelemetry instruments, exposed for Prometheus at ``/metrics``.

Each worker owns its ``MeterProvider`` and its Prometheus registry (nothing global, so several
workers in one process — tests — do not mix). Names, as Prometheus shows them:

- ``headway_jobs_total{status, route, tenant}`` — jobs ended, by terminal status
- ``headway_queue_wait_seconds{lane}`` — record timestamp → the job starts (histogram)
- ``headway_provider_latency_seconds{provider, model, outcome}`` — each provider call
- ``headway_tokens_total{tenant, route, direction}`` — input / output tokens of usage events
- ``headway_cost_usd_total{tenant, route}`` — spend of usage events
- ``headway_quota_deferrals_total{tenant, reason}`` — a job not admitted yet (rpm, tpm, …)
- ``headway_parks_total{reason}`` — jobs parked on the retry topic (provider, quota)
- ``headway_in_flight``, ``headway_buffered_jobs{lane}``, ``headway_consumer_lag{lane}``
  (records not yet fetched), ``headway_circuit_state{deployment}`` (0 closed, 1 half-open,
  2 open), ``headway_ready`` (1 ready, 0 not).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from schemas.results import JobResult, UsageEvent
from workers.health import CircuitState

CONTENT_TYPE = CONTENT_TYPE_LATEST
_CIRCUIT_VALUES = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}
Gauges = Callable[[], Mapping[str, float]]


class Metrics:
    """``metrics.job_ended(result)``…; ``metrics.render()`` is the Prometheus text."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reader = PrometheusMetricReader(registry=self.registry, scope_info_enabled=False)
        self._provider = MeterProvider(metric_readers=[reader])
        meter = self._provider.get_meter("headway.worker")
        self._jobs = meter.create_counter("headway_jobs", description="jobs ended")
        self._queue_wait = meter.create_histogram(
            "headway_queue_wait", unit="s", description="from the record's timestamp to start"
        )
        self._latency = meter.create_histogram(
            "headway_provider_latency", unit="s", description="provider calls"
        )
        self._tokens = meter.create_counter("headway_tokens", description="tokens used")
        self._cost = meter.create_counter("headway_cost_usd", description="spend in USD")
        self._deferrals = meter.create_counter(
            "headway_quota_deferrals", description="jobs not admitted yet"
        )
        self._parks = meter.create_counter("headway_parks", description="jobs parked")
        self._gauges: list[tuple[str, str, Gauges]] = []

    def close(self) -> None:
        self._provider.shutdown()

    # -- events -------------------------------------------------------------------------------

    def job_ended(self, result: JobResult, events: Iterable[UsageEvent] = ()) -> None:
        route = result.route or ""
        self._jobs.add(1, {"status": result.status.value, "route": route, "tenant": result.tenant})
        for event in events:
            labels = {"tenant": event.tenant, "route": route}
            self._tokens.add(event.input_tokens, {**labels, "direction": "input"})
            self._tokens.add(event.output_tokens, {**labels, "direction": "output"})
            self._cost.add(event.cost_usd, labels)

    def job_started(self, lane: str, waited_s: float) -> None:
        self._queue_wait.record(max(0.0, waited_s), {"lane": lane})

    def provider_call(self, provider: str, model: str, outcome: str, seconds: float) -> None:
        self._latency.record(seconds, {"provider": provider, "model": model, "outcome": outcome})

    def deferred(self, tenant: str, reason: str) -> None:
        self._deferrals.add(1, {"tenant": tenant, "reason": reason})

    def parked(self, reason: str) -> None:
        self._parks.add(1, {"reason": reason})

    # -- gauges read at scrape time -----------------------------------------------------------

    def gauge(self, name: str, label: str, read: Gauges, description: str = "") -> None:
        """``read()`` → {label value: value}; an empty label name means one unlabelled value."""

        def observe(_: CallbackOptions) -> Iterable[Observation]:
            for key, value in read().items():
                yield Observation(value, {label: key} if label else {})

        meter = self._provider.get_meter("headway.worker")
        meter.create_observable_gauge(name, callbacks=[observe], description=description)

    @staticmethod
    def circuit_values(states: Mapping[str, CircuitState]) -> dict[str, float]:
        return {key: _CIRCUIT_VALUES[state] for key, state in states.items()}

    def render(self) -> bytes:
        return generate_latest(self.registry)
