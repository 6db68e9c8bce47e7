"""The worker's metrics: OpenTelemetry instruments, exposed for Prometheus at ``/metrics``.

The two per-job histograms are ``prometheus_client`` histograms in the same registry (buckets
for seconds, ~2 µs an observation): an OTel ``Histogram.record`` cost ~14 µs, twice per job.

Each worker owns its ``MeterProvider`` and its Prometheus registry (nothing global, so several
workers in one process — tests — do not mix). Names, as Prometheus shows them:

- ``headway_jobs_total{status, route, tenant}`` — jobs ended, by terminal status
- ``headway_queue_wait_seconds{lane}`` — record timestamp → the job starts (histogram)
- ``headway_provider_latency_seconds{provider, model, outcome}`` — each provider call
- ``headway_tokens_total{tenant, route, direction}`` — input / output tokens of usage events
- ``headway_cost_usd_total{tenant, route}`` — spend of usage events
- ``headway_quota_deferrals_total{tenant, reason}`` — a job not admitted yet (rpm, tpm, …)
- ``headway_provider_retries_total{provider, model}`` — calls that were not a job's first
- ``headway_parks_total{reason}`` — jobs parked on the retry topic (provider, quota)
- ``headway_cache_lookups_total{route, outcome}`` — response cache: hit, miss, coalesced
- ``headway_batch_lane_jobs_total{route}`` — jobs handed to a provider Batch API
- ``headway_guardrail_events_total{guardrail, action}`` — redacted (values), blocked, flagged
- ``headway_control_skipped_total{reason}`` — control commands skipped: unreadable,
  undecodable, unauthenticated, future_at (dated too far ahead), ledger_refused
- ``headway_in_flight``, ``headway_buffered_jobs{lane}``, ``headway_consumer_lag{lane}``
  (records not yet fetched), ``headway_spilled_jobs{lane}`` (jobs spilled to the ledger and
  waiting there, every worker's), ``headway_circuit_state{deployment}`` (0 closed, 1 half-open,
  2 open), ``headway_ready`` (1 ready, 0 not).

Label values come from the config, never from a record alone: a tenant the config does not
list is ``default`` (it is served by ``[tenants.default]``, or refused), a route it does not
list is ``unknown``. Records can name any tenant or route; a series per name would let them
fill the exporter's series limit and push real tenants out of ``headway_jobs_total``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from schemas.results import JobResult, UsageEvent
from workers.calls.health import CircuitState

CONTENT_TYPE = CONTENT_TYPE_LATEST
DEFAULT_LABEL = "default"
UNKNOWN_LABEL = "unknown"
_CIRCUIT_VALUES = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}
Gauges = Callable[[], Mapping[str, float]]
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
QUEUE_WAIT_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)


class _Histogram:
    """A labelled Prometheus histogram with its children kept at hand."""

    def __init__(
        self,
        name: str,
        description: str,
        labels: tuple[str, ...],
        registry: CollectorRegistry,
        buckets: tuple[float, ...],
    ) -> None:
        self._metric = Histogram(name, description, labels, registry=registry, buckets=buckets)
        self._children: dict[tuple[str, ...], Histogram] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        child.observe(value)


Counts = collections.defaultdict[tuple[tuple[str, str], ...], float]


class Metrics:
    """``metrics.job_ended(result)``…; ``metrics.render()`` is the Prometheus text."""

    def __init__(
        self, tenants: Iterable[str] | None = None, routes: Iterable[str] | None = None
    ) -> None:
        """``tenants``/``routes``: the names the config lists (None: any name is a label)."""
        self._tenants = None if tenants is None else frozenset(tenants)
        self._routes = None if routes is None else frozenset(routes)
        self.registry = CollectorRegistry()
        reader = PrometheusMetricReader(registry=self.registry, scope_info_enabled=False)
        resource = Resource.create({"service.name": "headway-worker"})
        self._provider = MeterProvider(metric_readers=[reader], resource=resource)
        meter = self._provider.get_meter("headway.worker")
        # counters are plain dicts read at scrape time: an OTel Counter.add costs ~10 µs a call
        self._jobs = self._counter(meter, "headway_jobs", "jobs ended")
        self._tokens = self._counter(meter, "headway_tokens", "tokens used")
        self._cost = self._counter(meter, "headway_cost_usd", "spend in USD")
        self._deferrals = self._counter(meter, "headway_quota_deferrals", "jobs not admitted yet")
        self._parks = self._counter(meter, "headway_parks", "jobs parked")
        self._retries = self._counter(meter, "headway_provider_retries", "repeated calls")
        self._cache = self._counter(meter, "headway_cache_lookups", "response cache lookups")
        self._batched = self._counter(
            meter, "headway_batch_lane_jobs", "jobs handed to a provider Batch API"
        )
        self._guardrails = self._counter(meter, "headway_guardrail_events", "guardrail actions")
        self._control_skipped = self._counter(
            meter, "headway_control_skipped", "control commands skipped"
        )
        self._queue_wait = _Histogram(
            "headway_queue_wait_seconds",
            "from the record's timestamp to start",
            ("lane",),
            self.registry,
            QUEUE_WAIT_BUCKETS,
        )
        self._latency = _Histogram(
            "headway_provider_latency_seconds",
            "provider calls",
            ("provider", "model", "outcome"),
            self.registry,
            LATENCY_BUCKETS,
        )
        self._gauges: list[tuple[str, str, Gauges]] = []

    @staticmethod
    def _counter(meter: Meter, name: str, description: str) -> Counts:
        counts: Counts = collections.defaultdict(float)

        def observe(_: CallbackOptions) -> Iterable[Observation]:
            for labels, total in list(counts.items()):
                yield Observation(total, dict(labels))

        meter.create_observable_counter(name, callbacks=[observe], description=description)
        return counts

    def close(self) -> None:
        self._provider.shutdown()

    # -- events -------------------------------------------------------------------------------

    def job_ended(self, result: JobResult, events: Iterable[UsageEvent] = ()) -> None:
        tenant, where = ("tenant", self.tenant(result.tenant)), ("route", self.route(result.route))
        self._jobs[(("status", result.status.value), where, tenant)] += 1
        for event in events:
            self._tokens[(tenant, where, ("direction", "input"))] += event.input_tokens
            self._tokens[(tenant, where, ("direction", "output"))] += event.output_tokens
            self._cost[(tenant, where)] += event.cost_usd

    def job_started(self, lane: str, waited_s: float) -> None:
        self._queue_wait.observe((lane,), max(0.0, waited_s))

    def provider_call(
        self, provider: str, model: str, outcome: str, seconds: float, retry: bool
    ) -> None:
        self._latency.observe((provider, model, outcome), seconds)
        if retry:
            self._retries[(("provider", provider), ("model", model))] += 1

    def set_aside(self, tenant: str, reason: str) -> None:
        self._deferrals[(("tenant", self.tenant(tenant)), ("reason", reason))] += 1

    def tenant(self, name: str) -> str:
        """A tenant's label: its name when the config lists it, else ``default``."""
        return name if self._tenants is None or name in self._tenants else DEFAULT_LABEL

    def route(self, name: str | None) -> str:
        """A route's label: its name when the config lists it, else ``unknown``."""
        if name is None:
            return ""
        return name if self._routes is None or name in self._routes else UNKNOWN_LABEL

    def parked(self, reason: str) -> None:
        self._parks[(("reason", reason),)] += 1

    def guardrail(self, name: str, action: str, count: int = 1) -> None:
        self._guardrails[(("guardrail", name), ("action", action))] += count

    def control_skipped(self, reason: str) -> None:
        self._control_skipped[(("reason", reason),)] += 1

    def cache_lookup(self, route: str, outcome: str) -> None:
        """``outcome``: hit, miss, or coalesced (served by an identical call in flight)."""
        self._cache[(("route", route), ("outcome", outcome))] += 1

    def batch_handed_over(self, route: str) -> None:
        self._batched[(("route", route),)] += 1

    # -- gauges read at scrape time -----------------------------------------------------------

    def gauge(self, name: str, label: str, read: Gauges, description: str = "") -> None:
        """``read()`` → {label value: value}; an empty label name means one unlabelled value."""

        def observe(_: CallbackOptions) -> Iterable[Observation]:
            for key, value in read().items():
                yield Observation(value, {label: key} if label else {})

        meter = self._provider.get_meter("headway.worker")
        meter.create_observable_gauge(name, callbacks=[observe], description=description)

    def worker_gauges(
        self,
        *,
        in_flight: Callable[[], float],
        buffered: Gauges,
        lag: Gauges,
        circuits: Callable[[], Mapping[str, CircuitState]],
        ready: Callable[[], bool],
        spilled: Gauges | None = None,
    ) -> None:
        """The worker's gauges, each read at scrape time (lane- and deployment-labelled)."""
        self.gauge("headway_in_flight", "", lambda: {"": in_flight()})
        self.gauge("headway_buffered_jobs", "lane", buffered)
        if spilled is not None:
            self.gauge("headway_spilled_jobs", "lane", spilled)
        self.gauge("headway_consumer_lag", "lane", lag)
        self.gauge(
            "headway_circuit_state",
            "deployment",
            lambda: {key: _CIRCUIT_VALUES[state] for key, state in circuits().items()},
        )
        self.gauge("headway_ready", "", lambda: {"": float(ready())})

    def budget_gauges(
        self,
        *,
        spent: Callable[[str], Mapping[str, float]],
        remaining: Callable[[str], Mapping[str, float]],
    ) -> None:
        """Each budgeted tenant's and team's spend in its current period, and what is left."""
        self.gauge("headway_budget_spent_usd", "tenant", lambda: spent("tenant"))
        self.gauge("headway_budget_remaining_usd", "tenant", lambda: remaining("tenant"))
        self.gauge("headway_team_budget_spent_usd", "team", lambda: spent("team"))
        self.gauge("headway_team_budget_remaining_usd", "team", lambda: remaining("team"))

    def render(self) -> bytes:
        return generate_latest(self.registry)
