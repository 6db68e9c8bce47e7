"""Process settings from ``HEADWAY_*`` environment variables (CONTRACT §7).

Settings are an immutable object built once at the edge (CLI, test fixture) and passed in;
nothing below the edge reads the environment.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.topics import DEFAULT_CONSUMER_GROUP, DEFAULT_PREFIX, Topics

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./headway.db"
DEFAULT_CONFIG_PATH = Path("headway.toml")


@dataclass(frozen=True)
class RetrySettings:
    """How a job's provider calls are retried, and when a long wait parks it instead."""

    max_attempts: int = 5
    max_total_s: float = 120.0
    initial_s: float = 0.2
    max_wait_s: float = 30.0
    park_after_s: float = 5.0  # a longer wait parks the job
    max_parks: int = 10  # parks per job before it fails with its last provider error


@dataclass(frozen=True)
class CircuitSettings:
    """When a deployment's circuit opens, and for how long."""

    failures: int = 5  # consecutive failures that open the circuit
    error_rate: float = 0.5  # or this share of failures…
    window: int = 20  # …over the last this many calls
    min_calls: int = 10  # (once at least this many are known)
    open_s: float = 30.0  # how long an open circuit refuses calls before a probe


@dataclass(frozen=True)
class BatchLaneSettings:
    """The provider Batch-API lane's rhythm (docs/batch-lane.md)."""

    pack_every_s: float = 30.0
    poll_every_s: float = 60.0
    max_items: int | None = None  # per submission, below the provider's own limit
    wait_s: float = 600.0  # a part-filled batch is sent once its oldest item waited this long
    margin_s: float = 3600.0  # an item this near its deadline goes back online


@dataclass(frozen=True)
class LedgerSettings:
    """The ledger database and how this worker writes to it."""

    database_url: str
    owner: str  # this worker's id: the owner of its leases
    lease_s: float = 30.0
    flush_ms: int = 0
    batch_max: int = 200
    probe_s: float = 1.0  # while the database is unreachable, how often it is asked again


@dataclass(frozen=True)
class EmbedSettings:
    """Embedding micro-batches: many single jobs, one provider request."""

    linger_s: float = 0.02
    max_batch_tokens: int = 250_000


@dataclass(frozen=True)
class CacheSettings:
    """The response cache's pruning."""

    max_entries: int = 1_000_000
    prune_s: float = 60.0


@dataclass(frozen=True)
class RetentionSettings:
    """How long the ledger keeps what (docs/architecture.md, "a ledger that stays small")."""

    results_h: float = 24.0  # a finished job's row (with its result body) stays in ``jobs``
    usage_h: float = 24.0  # usage events, before they are summed into days
    jobs_d: float = 8.0  # what is kept of a moved job (deduplication): the lanes' retention + 1
    usage_days_d: float = 400.0  # the daily usage sums
    audit_d: float = 400.0  # audit records
    audit_captures_d: float = 30.0  # captured prompts and outputs (audit_capture)
    prune_s: float = 300.0  # how often a worker prunes (0: never; ``headway ledger prune``)
    batch: int = 1000  # rows per pruning transaction


@dataclass(frozen=True)
class BufferSettings:
    """The lane buffers between the fetch loop and the runners."""

    max_jobs: int = 4096
    max_bytes: int = 64 * 1024 * 1024
    priority_aging_s: float | None = 30.0
    spill: bool = True  # a full lane spills over-share tenants' jobs to the ledger


@dataclass(frozen=True)
class HttpSettings:
    """The one HTTP client of a worker's provider calls."""

    max_connections: int = 2048
    max_response_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class WebhookSettings:
    """Tenants' alert webhooks: where they may go and how they are delivered."""

    allow_private: bool = False  # any tenant's webhook may reach loopback/private addresses
    timeout_s: float = 5.0  # one POST, whole: resolving, connecting, sending, the status line
    concurrency: int = 8  # tenants delivered to at once
    backoff_s: float = 5.0  # a receiver not reached is tried again after this, doubling…
    max_backoff_s: float = 300.0  # …up to this
    lease_s: float = 10.0  # the delivering worker's lease, renewed while it delivers


_RETRY, _CIRCUIT, _BATCH_LANE = RetrySettings(), CircuitSettings(), BatchLaneSettings()
_LEDGER = LedgerSettings("", "")
_EMBED, _CACHE, _BUFFER, _HTTP = EmbedSettings(), CacheSettings(), BufferSettings(), HttpSettings()
_RETAIN, _WEBHOOK = RetentionSettings(), WebhookSettings()


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Settings(BaseSettings):
    """Everything a headway process needs that is not the TOML config."""

    model_config = SettingsConfigDict(env_prefix="HEADWAY_", frozen=True, extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None, description="host:port[,host:port]; unset → embedded broker for demo/dev"
    )
    database_url: str = DEFAULT_DATABASE_URL
    config: Path = DEFAULT_CONFIG_PATH
    topic_prefix: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")] = DEFAULT_PREFIX
    concurrency: Annotated[int, Field(ge=1, le=100_000)] = 256
    pipeline_runners: Annotated[int, Field(ge=0, le=100_000)] | None = Field(
        default=None,
        description="extra jobs prepared ahead (intake, admission, ledger claim) or "
        "publishing while HEADWAY_CONCURRENCY others are between their provider call and their "
        "stored result; a crash still repeats at most HEADWAY_CONCURRENCY calls "
        "(unset: as many as HEADWAY_CONCURRENCY; 0: none)",
    )

    @property
    def runners_ahead(self) -> int:
        """Jobs a worker prepares ahead of its ``concurrency`` provider-call slots."""
        return self.concurrency if self.pipeline_runners is None else self.pipeline_runners

    # Kafka
    consumer_group: str = DEFAULT_CONSUMER_GROUP
    job_partitions: Annotated[int, Field(ge=1)] = 12
    internal_partitions: Annotated[int, Field(ge=1)] = 12
    replication_factor: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="replicas of each topic `headway topics create` makes (unset: 3 on a "
        "cluster of three brokers or more, else one per broker)",
    )
    min_insync_replicas: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="min.insync.replicas of each topic created (unset: 2 with 3 replicas or "
        "more, else 1); with acks=all a write needs this many replicas",
    )
    jobs_retention_hours: Annotated[float, Field(gt=0)] = Field(
        168.0, description="retention of the job lanes and the retry topic"
    )
    results_retention_hours: Annotated[float, Field(gt=0)] = Field(
        168.0, description="retention of the results, usage, control and alerts topics"
    )
    dlq_retention_hours: Annotated[float, Field(gt=0)] = Field(
        720.0, description="retention of the dead-letter topic"
    )
    enable_idempotence: bool = False
    producer_linger_ms: Annotated[int, Field(ge=0)] = Field(
        0,
        description="how long produced records wait for more before their batch is sent "
        "(0: at once — records produced meanwhile still share the next request)",
    )
    max_message_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    session_timeout_ms: Annotated[int, Field(ge=1000)] = 10_000
    max_poll_interval_ms: Annotated[int, Field(ge=1000)] = 300_000

    # Worker
    worker_id: str = Field(default_factory=_default_worker_id)
    http_port: Annotated[int, Field(ge=0, le=65535)] | None = Field(
        default=None,
        description="serve /healthz and /readyz on this port (0: any free port; unset: off)",
    )
    ledger_probe_s: Annotated[float, Field(gt=0)] = Field(
        _LEDGER.probe_s,
        description="while the database is unreachable, how often the worker asks again",
    )
    budget_gauges_s: Annotated[float, Field(gt=0)] = Field(
        15.0,
        description="how often /metrics' budget gauges (spent, remaining per tenant) are read "
        "from the ledger",
    )
    webhook_allow_private: bool = Field(
        _WEBHOOK.allow_private,
        description="let every tenant's alert_webhook_url reach loopback, link-local, private, "
        "unspecified and multicast addresses (refused by default; per tenant: "
        "alert_webhook_allow_private)",
    )
    webhook_timeout_s: Annotated[float, Field(gt=0)] = Field(
        _WEBHOOK.timeout_s,
        description="the longest one attempt at an alert webhook POST may take, whole "
        "(resolving, connecting, sending, the answer's status line)",
    )
    webhook_concurrency: Annotated[int, Field(ge=1)] = Field(
        _WEBHOOK.concurrency, description="tenants' alert webhooks delivered to at once"
    )
    buffer_max_jobs: Annotated[int, Field(ge=1)] = _BUFFER.max_jobs
    buffer_max_bytes: Annotated[int, Field(ge=1024)] = _BUFFER.max_bytes
    buffer_spill: bool = Field(
        _BUFFER.spill,
        description="when a lane's buffer is full, store the jobs of tenants over their share "
        "in the ledger and keep reading (false: pause the lane)",
    )
    commit_interval_ms: Annotated[int, Field(ge=10)] = 200
    priority_aging_s: Annotated[float, Field(gt=0)] | None = Field(
        _BUFFER.priority_aging_s,
        description="a lane whose oldest job waited this long is served one lane higher "
        "(unset: strict priority)",
    )
    revoke_grace_s: Annotated[float, Field(ge=0)] = 10.0
    shutdown_grace_s: Annotated[float, Field(ge=0)] = 30.0
    lease_s: Annotated[float, Field(gt=0)] = _LEDGER.lease_s
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="json, text, or auto: JSON unless stderr is a terminal"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    ledger_flush_ms: Annotated[int, Field(ge=0)] = Field(
        _LEDGER.flush_ms,
        description="how long a ledger batch waits for more writes before it is flushed "
        "(0: as soon as a flusher is free — writes arriving meanwhile form the next batch)",
    )
    ledger_batch_max: Annotated[int, Field(ge=1)] = Field(
        _LEDGER.batch_max,
        description="ledger writes per statement batch; smaller batches store a wave of "
        "results sooner (each waits less behind the others), larger ones cost less CPU",
    )

    # Provider calls
    http_max_connections: Annotated[int, Field(ge=1)] = _HTTP.max_connections
    max_response_bytes: Annotated[int, Field(ge=1024)] = Field(
        _HTTP.max_response_bytes,
        description="the largest provider answer a worker reads; a larger one fails the call "
        "as a provider error (provider_error), never the worker's memory",
    )
    retry_max_attempts: Annotated[int, Field(ge=1)] = _RETRY.max_attempts
    retry_max_total_s: Annotated[float, Field(gt=0)] = _RETRY.max_total_s
    retry_initial_s: Annotated[float, Field(ge=0)] = _RETRY.initial_s
    retry_max_wait_s: Annotated[float, Field(ge=0)] = _RETRY.max_wait_s
    retry_park_after_s: Annotated[float, Field(ge=0)] = Field(
        _RETRY.park_after_s,
        description="a job that must wait longer than this is parked on the retry topic "
        "instead of holding its slot",
    )
    retry_max_parks: Annotated[int, Field(ge=0)] = Field(
        _RETRY.max_parks, description="parks per job before it fails with its last provider error"
    )
    circuit_failures: Annotated[int, Field(ge=1)] = Field(
        _CIRCUIT.failures, description="consecutive failures of a deployment that open its circuit"
    )
    circuit_error_rate: Annotated[float, Field(gt=0, le=1)] = Field(
        _CIRCUIT.error_rate,
        description="or this share of failures over the last circuit_window calls",
    )
    circuit_window: Annotated[int, Field(ge=1)] = _CIRCUIT.window
    circuit_min_calls: Annotated[int, Field(ge=1)] = _CIRCUIT.min_calls
    circuit_open_s: Annotated[float, Field(gt=0)] = Field(
        _CIRCUIT.open_s, description="how long an open circuit refuses calls before one probe"
    )
    cache_max_entries: Annotated[int, Field(ge=1)] = Field(
        default=_CACHE.max_entries, description="response-cache entries kept (oldest pruned first)"
    )
    cache_prune_s: Annotated[float, Field(gt=0)] = Field(
        default=_CACHE.prune_s,
        description="how often a worker prunes expired and excess cache entries",
    )
    retain_results_h: Annotated[float, Field(ge=0)] = Field(
        _RETAIN.results_h,
        description="hours a finished job keeps its result body in the ledger (a redelivery "
        "within them republishes it; after them, what was kept, output_expired)",
    )
    retain_usage_h: Annotated[float, Field(ge=0)] = Field(
        _RETAIN.usage_h, description="hours usage events are kept one by one, then summed by day"
    )
    retain_jobs_d: Annotated[float, Field(ge=0)] = Field(
        _RETAIN.jobs_d,
        description="days a finished job's key and status are kept for deduplication "
        "(at least the job topics' retention)",
    )
    retain_usage_days_d: Annotated[float, Field(ge=0)] = Field(
        _RETAIN.usage_days_d, description="days the daily usage sums are kept"
    )
    retain_audit_d: Annotated[float, Field(ge=0)] = Field(
        _RETAIN.audit_d, description="days the audit trail's records are kept"
    )
    retain_audit_captures_d: Annotated[float, Field(ge=0)] = Field(
        _RETAIN.audit_captures_d,
        description="days captured prompts and outputs (audit_capture) are kept",
    )
    prune_s: Annotated[float, Field(ge=0)] = Field(
        _RETAIN.prune_s,
        description="how often a worker prunes the ledger, one worker at a time (0: never)",
    )
    prune_batch: Annotated[int, Field(ge=1, le=100_000)] = Field(
        _RETAIN.batch, description="rows per pruning transaction"
    )
    embed_linger_ms: Annotated[float, Field(ge=0)] = Field(
        _EMBED.linger_s * 1000,
        description="how long a micro-batch of embedding jobs waits for more",
    )
    embed_max_batch_tokens: Annotated[int, Field(ge=1)] = Field(
        _EMBED.max_batch_tokens,
        description="estimated tokens per combined embeddings request, at most",
    )
    gc_threshold: Annotated[int, Field(ge=0)] = Field(
        50_000,
        description="while a worker runs, Python's garbage collector skips the start-up heap "
        "and collects after this many new objects (0: Python's defaults; docs/performance.md)",
    )
    batch_pack_s: Annotated[float, Field(gt=0)] = Field(
        _BATCH_LANE.pack_every_s,
        description="how often jobs waiting for a provider batch are packed and submitted",
    )
    batch_poll_s: Annotated[float, Field(gt=0)] = Field(
        _BATCH_LANE.poll_every_s,
        description="how often submitted provider batches are asked whether they ended",
    )
    batch_wait_s: Annotated[float, Field(ge=0)] = Field(
        _BATCH_LANE.wait_s,
        description="a part-filled provider batch is sent once its oldest job waited this",
    )
    batch_max_items: Annotated[int, Field(ge=1)] | None = Field(
        None, description="jobs per provider batch, at most (default: the provider's limit)"
    )

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        """``info`` and ``INFO`` alike; formats in lower case."""
        if not isinstance(value, str):
            return value
        levels = ("debug", "info", "warning", "error")
        return value.upper() if value.lower() in levels else value.lower()

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    # -- the groups the parts take whole ------------------------------------------------------

    @property
    def retry(self) -> RetrySettings:
        return RetrySettings(
            max_attempts=self.retry_max_attempts,
            max_total_s=self.retry_max_total_s,
            initial_s=self.retry_initial_s,
            max_wait_s=self.retry_max_wait_s,
            park_after_s=self.retry_park_after_s,
            max_parks=self.retry_max_parks,
        )

    @property
    def circuit(self) -> CircuitSettings:
        return CircuitSettings(
            failures=self.circuit_failures,
            error_rate=self.circuit_error_rate,
            window=self.circuit_window,
            min_calls=self.circuit_min_calls,
            open_s=self.circuit_open_s,
        )

    @property
    def batch_lane(self) -> BatchLaneSettings:
        return BatchLaneSettings(
            pack_every_s=self.batch_pack_s,
            poll_every_s=self.batch_poll_s,
            max_items=self.batch_max_items,
            wait_s=self.batch_wait_s,
        )

    @property
    def ledger(self) -> LedgerSettings:
        return LedgerSettings(
            database_url=self.database_url,
            owner=self.worker_id,
            lease_s=self.lease_s,
            flush_ms=self.ledger_flush_ms,
            batch_max=self.ledger_batch_max,
            probe_s=self.ledger_probe_s,
        )

    @property
    def embed(self) -> EmbedSettings:
        return EmbedSettings(self.embed_linger_ms / 1000, self.embed_max_batch_tokens)

    @property
    def cache(self) -> CacheSettings:
        return CacheSettings(self.cache_max_entries, self.cache_prune_s)

    @property
    def retention(self) -> RetentionSettings:
        return RetentionSettings(
            results_h=self.retain_results_h,
            usage_h=self.retain_usage_h,
            jobs_d=self.retain_jobs_d,
            usage_days_d=self.retain_usage_days_d,
            audit_d=self.retain_audit_d,
            audit_captures_d=self.retain_audit_captures_d,
            prune_s=self.prune_s,
            batch=self.prune_batch,
        )

    @property
    def buffer(self) -> BufferSettings:
        return BufferSettings(
            self.buffer_max_jobs, self.buffer_max_bytes, self.priority_aging_s, self.buffer_spill
        )

    @property
    def webhooks(self) -> WebhookSettings:
        return WebhookSettings(
            allow_private=self.webhook_allow_private,
            timeout_s=self.webhook_timeout_s,
            concurrency=self.webhook_concurrency,
        )

    @property
    def http(self) -> HttpSettings:
        return HttpSettings(self.http_max_connections, self.max_response_bytes)
