"""Process settings from ``HEADWAY_*`` environment variables (CONTRACT §7).

Settings are an immutable object built once at the edge (CLI, test fixture) and passed in;
nothing below the edge reads the environment.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.topics import DEFAULT_CONSUMER_GROUP, DEFAULT_PREFIX, Topics

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./headway.db"
DEFAULT_CONFIG_PATH = Path("headway.toml")


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
        168.0, description="retention of the results, usage and control topics"
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
        1.0, description="while the database is unreachable, how often the worker asks again"
    )
    buffer_max_jobs: Annotated[int, Field(ge=1)] = 4096
    buffer_max_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    commit_interval_ms: Annotated[int, Field(ge=10)] = 200
    priority_aging_s: Annotated[float, Field(gt=0)] | None = Field(
        30.0,
        description="a lane whose oldest job waited this long is served one lane higher "
        "(unset: strict priority)",
    )
    revoke_grace_s: Annotated[float, Field(ge=0)] = 10.0
    shutdown_grace_s: Annotated[float, Field(ge=0)] = 30.0
    lease_s: Annotated[float, Field(gt=0)] = 30.0
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="json, text, or auto: JSON unless stderr is a terminal"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    ledger_flush_ms: Annotated[int, Field(ge=0)] = Field(
        0,
        description="how long a ledger batch waits for more writes before it is flushed "
        "(0: as soon as a flusher is free — writes arriving meanwhile form the next batch)",
    )
    ledger_batch_max: Annotated[int, Field(ge=1)] = Field(
        200,
        description="ledger writes per statement batch; smaller batches store a wave of "
        "results sooner (each waits less behind the others), larger ones cost less CPU",
    )

    # Provider calls
    http_max_connections: Annotated[int, Field(ge=1)] = 2048
    max_response_bytes: Annotated[int, Field(ge=1024)] = Field(
        64 * 1024 * 1024,
        description="the largest provider answer a worker reads; a larger one fails the call "
        "as a provider error (provider_error), never the worker's memory",
    )
    retry_max_attempts: Annotated[int, Field(ge=1)] = 5
    retry_max_total_s: Annotated[float, Field(gt=0)] = 120.0
    retry_initial_s: Annotated[float, Field(ge=0)] = 0.2
    retry_max_wait_s: Annotated[float, Field(ge=0)] = 30.0
    retry_park_after_s: Annotated[float, Field(ge=0)] = Field(
        5.0,
        description="a job that must wait longer than this is parked on the retry topic "
        "instead of holding its slot",
    )
    retry_max_parks: Annotated[int, Field(ge=0)] = Field(
        10, description="parks per job before it fails with its last provider error"
    )
    circuit_failures: Annotated[int, Field(ge=1)] = Field(
        5, description="consecutive failures of a deployment that open its circuit"
    )
    circuit_error_rate: Annotated[float, Field(gt=0, le=1)] = Field(
        0.5, description="or this share of failures over the last circuit_window calls"
    )
    circuit_window: Annotated[int, Field(ge=1)] = 20
    circuit_min_calls: Annotated[int, Field(ge=1)] = 10
    circuit_open_s: Annotated[float, Field(gt=0)] = Field(
        30.0, description="how long an open circuit refuses calls before one probe"
    )
    cache_max_entries: Annotated[int, Field(ge=1)] = Field(
        default=1_000_000, description="response-cache entries kept (oldest pruned first)"
    )
    cache_prune_s: Annotated[float, Field(gt=0)] = Field(
        default=60.0, description="how often a worker prunes expired and excess cache entries"
    )
    embed_linger_ms: Annotated[float, Field(ge=0)] = Field(
        20.0, description="how long a micro-batch of embedding jobs waits for more"
    )
    embed_max_batch_tokens: Annotated[int, Field(ge=1)] = Field(
        250_000, description="estimated tokens per combined embeddings request, at most"
    )
    gc_threshold: Annotated[int, Field(ge=0)] = Field(
        50_000,
        description="while a worker runs, Python's garbage collector skips the start-up heap "
        "and collects after this many new objects (0: Python's defaults; docs/performance.md)",
    )
    batch_pack_s: Annotated[float, Field(gt=0)] = Field(
        30.0, description="how often jobs waiting for a provider batch are packed and submitted"
    )
    batch_poll_s: Annotated[float, Field(gt=0)] = Field(
        60.0, description="how often submitted provider batches are asked whether they ended"
    )
    batch_wait_s: Annotated[float, Field(ge=0)] = Field(
        600.0, description="a part-filled provider batch is sent once its oldest job waited this"
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
