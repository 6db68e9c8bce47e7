"""SQLAlchemy models of the ledger. Schema changes go through Alembic (migrations/)."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NANO = 1_000_000_000  # money is stored as integer nano-USD so sums are exact


def to_nano(usd: float) -> int:
    return round(usd * NANO)


def from_nano(nano: int) -> float:
    return nano / NANO


class Base(DeclarativeBase):
    pass


class RowStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class JobRow(Base):
    """The source of truth for one job: who holds it, and its stored terminal result."""

    __tablename__ = "jobs"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    batch_id: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str | None] = mapped_column(String(16))
    route: Mapped[str | None] = mapped_column(String(128))
    provider: Mapped[str | None] = mapped_column(String(128))
    deployment: Mapped[str | None] = mapped_column(String(256))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_nusd: Mapped[int] = mapped_column(BigInteger, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(256))
    lease_expires_at: Mapped[float] = mapped_column(Float, default=0.0)
    claims: Mapped[int] = mapped_column(Integer, default=1)
    result_json: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    completed_at: Mapped[float | None] = mapped_column(Float)

    # no index but the primary key may lead with tenant, job_id or status: a lookup by key
    # must not be planned on another (a fresh table's planner would; migration 0009)
    __table_args__ = (
        Index("ix_jobs_lease", "lease_owner", "status"),
        Index("ix_jobs_batch", "batch_id", "tenant"),
        # the pruner's "oldest first, 1,000 at a time" (a BRIN index cannot order: each batch
        # would sort every finished row, measured 0.5 s a batch at 1,000,000)
        Index("ix_jobs_completed", "completed_at"),
    )


class FinishedJobRow(Base):
    """A finished job past the results window (:mod:`workers.ledger.retention.steps`): what
    deduplication, ``status --batch`` and a redelivered job's result need, without its result
    body. Rows are inserted in completion order and never updated."""

    __tablename__ = "finished_jobs"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(64))
    batch_id: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str | None] = mapped_column(String(16))
    route: Mapped[str | None] = mapped_column(String(128))
    provider: Mapped[str | None] = mapped_column(String(128))
    deployment: Mapped[str | None] = mapped_column(String(256))
    attempts: Mapped[int] = mapped_column(Integer)
    claims: Mapped[int] = mapped_column(Integer)  # a replay's claim continues the count
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_nusd: Mapped[int] = mapped_column(BigInteger)
    completed_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_finished_jobs_batch", "batch_id", "tenant"),
        Index("ix_finished_jobs_completed", "completed_at"),
    )


def held_by(owner: str) -> ColumnElement[bool]:
    """``jobs.lease_owner = owner`` for a statement that names a job by its key: written as an
    expression no index serves, so the primary key is the only index its plan can use (see
    ``JobRow.__table_args__``)."""
    return func.coalesce(JobRow.lease_owner, "") == owner


class UsageRow(Base):
    """One UsageEvent; the sum of ``cost_nusd`` per tenant is the tenant's spend."""

    __tablename__ = "usage_events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(128))
    batch_id: Mapped[str | None] = mapped_column(String(128))
    route: Mapped[str] = mapped_column(String(128))
    provider: Mapped[str] = mapped_column(String(128))
    deployment: Mapped[str] = mapped_column(String(256))
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_nusd: Mapped[int] = mapped_column(BigInteger)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    timestamp: Mapped[float] = mapped_column(Float)
    payload: Mapped[str] = mapped_column(Text)
    tags: Mapped[str | None] = mapped_column(Text)  # canonical JSON of the usage tags

    __table_args__ = (
        Index("ix_usage_tenant_time", "tenant", "timestamp"),
        Index("ix_usage_tenant_job", "tenant", "job_id"),
        Index("ix_usage_time", "timestamp"),
    )


class UsageDailyRow(Base):
    """Usage events past their window, summed per day (UTC) and what they were spent on."""

    __tablename__ = "usage_daily"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    route: Mapped[str] = mapped_column(String(128), primary_key=True)
    provider: Mapped[str] = mapped_column(String(128), primary_key=True)
    deployment: Mapped[str] = mapped_column(String(256), primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(128), primary_key=True)  # '' for none
    tags_key: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of tags, ''
    events: Mapped[int] = mapped_column(BigInteger)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    cost_nusd: Mapped[int] = mapped_column(BigInteger)
    tags: Mapped[str | None] = mapped_column(Text)  # canonical JSON of the tag set; None: none

    __table_args__ = (Index("ix_usage_daily_tenant", "tenant", "day"),)


class LedgerLeaseRow(Base):
    """A named task one worker at a time runs (the pruner): held until ``expires_at``."""

    __tablename__ = "ledger_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(256))
    expires_at: Mapped[float] = mapped_column(Float)


class CancellationRow(Base):
    """A cancel command: one job (``scope = "job"``) or a whole batch (``"batch"``) of a tenant."""

    __tablename__ = "cancellations"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    target: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_cancellations_created", "created_at"),)


class QuotaBucketRow(Base):
    """A tenant's shared quota state for one resource (``rpm``, ``tpm``, ``in_flight``).

    ``rpm``/``tpm``: a token bucket — ``tokens`` as of ``updated_at``, refilled at the quota's
    rate by whoever takes from it next. ``in_flight``: the row is only the lock that makes
    growing a worker's slot grant atomic (see :class:`QuotaGrantRow`).
    """

    __tablename__ = "quota_buckets"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource: Mapped[str] = mapped_column(String(16), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class QuotaGrantRow(Base):
    """In-flight slots of a tenant that one worker holds; a grant whose worker stopped
    renewing it (``expires_at`` passed) no longer counts."""

    __tablename__ = "quota_grants"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource: Mapped[str] = mapped_column(String(16), primary_key=True)
    owner: Mapped[str] = mapped_column(String(256), primary_key=True)
    amount: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[float] = mapped_column(Float)


class BudgetRow(Base):
    """A budget's spend in one period (``day:2026-11-22``, ``month:2026-11``, ``total``), in
    nano-USD; updated in the same transaction as the usage events it sums. ``tenant`` names
    the budget's account: a tenant's (``acme``), a team's (``team:research``) or a batch's
    (``batch:acme/backfill-7``). A batch's cap lives here too (``limit_nusd``); the config's
    budgets leave it NULL."""

    __tablename__ = "budgets"

    tenant: Mapped[str] = mapped_column(String(200), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    spent_nusd: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[float] = mapped_column(Float)
    limit_nusd: Mapped[int | None] = mapped_column(BigInteger)
    limit_source: Mapped[str | None] = mapped_column(String(16))  # 'job' | 'operator'
    limit_set_at: Mapped[float | None] = mapped_column(Float)  # when the operator set it


class BudgetAlertRow(Base):
    """One budget alert, keyed by what it alerts (one insert wins across workers); published
    to the alerts topic once ``published_at`` is set."""

    __tablename__ = "budget_alerts"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    threshold: Mapped[str] = mapped_column(String(16), primary_key=True)  # '' for none
    event_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)  # the AlertEvent's JSON
    created_at: Mapped[float] = mapped_column(Float)
    published_at: Mapped[float | None] = mapped_column(Float)
    delivered_at: Mapped[float | None] = mapped_column(Float)  # to the tenant's webhook

    __table_args__ = (Index("ix_budget_alerts_unpublished", "published_at"),)


class BudgetHoldRow(Base):
    """A running job's reserved maximum cost in one of its budgets (a row per budget: its
    tenant's, its team's, its batch's); counts against that budget until the job settles or
    its worker stops renewing it."""

    __tablename__ = "budget_holds"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    period: Mapped[str] = mapped_column(String(224), primary_key=True)  # <account>/<period>
    amount_nusd: Mapped[int] = mapped_column(BigInteger)
    owner: Mapped[str] = mapped_column(String(256))
    expires_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_budget_holds_period", "tenant", "period"),
        Index("ix_budget_holds_account_period", "period"),
        Index("ix_budget_holds_owner", "owner"),
    )


class TemplateRow(Base):
    """One immutable version of a prompt template (``headway templates push``); ``body`` is
    its JSON (description, messages, defaults) and ``digest`` identifies that content."""

    __tablename__ = "prompt_templates"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class CacheRow(Base):
    """A provider's answer to a deterministic request, kept for ``expires_at``; ``scope`` is
    the tenant (or ``*`` for a route whose cache all tenants share) and ``key`` the hash of
    deployment and normalised request."""

    __tablename__ = "response_cache"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(128))
    deployment: Mapped[str] = mapped_column(String(256))
    output_json: Mapped[str] = mapped_column(Text)
    input_tokens: Mapped[int] = mapped_column(BigInteger)
    output_tokens: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_response_cache_expires", "expires_at"),
        Index("ix_response_cache_created", "created_at"),
    )


class BatchItemRow(Base):
    """A job handed to a provider's Batch API: its request line, what its result needs, and
    where it stands (``pending`` → ``packing`` → ``submitted`` → ``done``)."""

    __tablename__ = "batch_items"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    custom_id: Mapped[str] = mapped_column(String(64), unique=True)
    deployment_key: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))
    line: Mapped[str] = mapped_column(Text)
    job_json: Mapped[str] = mapped_column(Text)  # the job as it would be sent online
    who_json: Mapped[str] = mapped_column(Text)  # what its result echoes
    topic: Mapped[str] = mapped_column(String(249))
    record_value: Mapped[str] = mapped_column(Text)  # the original record, for the online fallback
    record_headers: Mapped[str] = mapped_column(Text)
    deadline: Mapped[float | None] = mapped_column(Float)
    generation: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    provider_batch: Mapped[str | None] = mapped_column(String(128))
    lease_owner: Mapped[str | None] = mapped_column(String(256))
    lease_expires_at: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_batch_items_status", "status", "deployment_key", "created_at"),
        Index("ix_batch_items_provider_batch", "provider_batch"),
    )


class ProviderBatchRow(Base):
    """One submission to a provider's Batch API; polled by whoever holds its lease."""

    __tablename__ = "provider_batches"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    deployment_key: Mapped[str] = mapped_column(String(256))
    items: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    lease_owner: Mapped[str | None] = mapped_column(String(256))
    lease_expires_at: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_provider_batches_status", "status"),)


class SpilledJobRow(Base):
    """A job record read past while its lane's buffer was full (its tenant over its share):
    the record as fetched, waiting in the ledger to be taken fairly by any worker
    (:mod:`workers.ledger.spill_rows`). Its offset was committed once this row was; the row is
    deleted when the job has finished."""

    __tablename__ = "spilled_jobs"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    lane: Mapped[str] = mapped_column(String(8))
    account: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(128))
    batch_id: Mapped[str | None] = mapped_column(String(128))
    record_topic: Mapped[str] = mapped_column(String(249))
    record_partition: Mapped[int] = mapped_column(Integer)
    record_offset: Mapped[int] = mapped_column(BigInteger)
    record_timestamp: Mapped[int] = mapped_column(BigInteger)
    record_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    record_value: Mapped[bytes] = mapped_column(LargeBinary)
    record_headers: Mapped[bytes] = mapped_column(LargeBinary)  # see spill_rows.encode_headers
    spilled_at: Mapped[float] = mapped_column(Float)
    lease_owner: Mapped[str | None] = mapped_column(String(256))
    lease_expires_at: Mapped[float] = mapped_column(Float, default=0.0)

    __table_args__ = (
        Index(
            "uq_spilled_jobs_record",
            "record_topic",
            "record_partition",
            "record_offset",
            unique=True,
        ),
        # the waiting rows only: a take never walks past the rows workers hold
        Index(
            "ix_spilled_jobs_waiting",
            "lane",
            "account",
            "id",
            sqlite_where=text("lease_owner IS NULL"),
            postgresql_where=text("lease_owner IS NULL"),
        ),
        Index("ix_spilled_jobs_batch", "batch_id", "tenant"),
        Index("ix_spilled_jobs_owner", "lease_owner"),
    )


class FairShareRow(Base):
    """The virtual time of one account in one lane while it has spilled jobs: taking *n* of
    its jobs adds *n* / weight, and the account with the least is served next — one clock
    shared by every worker, so weights hold across replicas. ``waiting`` counts its spilled
    jobs no worker holds; an account whose count rises from 0 starts at the least virtual
    time of the lane's waiting accounts, so idleness banks no credit."""

    __tablename__ = "fair_shares"

    lane: Mapped[str] = mapped_column(String(8), primary_key=True)
    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    vtime: Mapped[float] = mapped_column(Float)
    waiting: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (Index("ix_fair_shares_order", "lane", "vtime"),)


class AuditRow(Base):
    """One audit record per stored terminal result (workers/audit/): insert-only — no code
    updates it, and a trigger refuses an UPDATE on SQLite and PostgreSQL; the pruner deletes
    records past ``HEADWAY_RETAIN_AUDIT_D``. A job run again (a replay) gets another record."""

    __tablename__ = "audit_records"

    # keyed in time order within a tenant (appends, and `--since` reads a range of the key);
    # SQLite keeps the rows in that key (WITHOUT ROWID): one B-tree less to write per job
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    completed_at: Mapped[float] = mapped_column(Float, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    submitted_at: Mapped[float | None] = mapped_column(Float)
    batch_id: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str | None] = mapped_column(String(16))
    route: Mapped[str | None] = mapped_column(String(128))
    template: Mapped[str | None] = mapped_column(String(128))
    template_version: Mapped[int | None] = mapped_column(Integer)
    provider: Mapped[str | None] = mapped_column(String(128))
    deployment: Mapped[str | None] = mapped_column(String(256))
    region: Mapped[str | None] = mapped_column(String(64))
    signed_by: Mapped[str | None] = mapped_column(String(160))
    guardrails: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_nusd: Mapped[int] = mapped_column(BigInteger, default=0)
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    result_sha256: Mapped[str | None] = mapped_column(String(64))
    capture: Mapped[str] = mapped_column(String(16))

    __table_args__ = (
        Index("ix_audit_records_job", "tenant", "job_id"),
        {"sqlite_with_rowid": False},
    )


class AuditCaptureRow(Base):
    """A captured prompt and output (``audit_capture = "redacted" | "full"``), apart from the
    audit record so it has its own retention (``HEADWAY_RETAIN_AUDIT_CAPTURES_D``)."""

    __tablename__ = "audit_captures"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    completed_at: Mapped[float] = mapped_column(Float, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    prompt: Mapped[str | None] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_audit_captures_completed", "completed_at"),)
