"""JobResult and UsageEvent: what workers publish (CONTRACT §3–4).

Outputs only ever gain fields (the compatibility rule, README "Compatibility"): a reader
ignores fields it does not know, so a consumer pinned to an older headway keeps reading the
results and usage events of a newer one. Inputs (JobRequest, ControlCommand) stay strict: an
unknown field there is a mistake worth an error.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.jobs import JobKind


class JobStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    UNKNOWN_ROUTE = "unknown_route"
    FORBIDDEN = "forbidden"
    BUDGET_EXCEEDED = "budget_exceeded"
    COST_LIMIT_EXCEEDED = "cost_limit_exceeded"
    CONTENT_BLOCKED = "content_blocked"
    PROVIDER_ERROR = "provider_error"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CANCELLED = "cancelled"
    INTERNAL_ERROR = "internal_error"  # extension: headway's own code kept failing on the job
    RESULT_TOO_LARGE = "result_too_large"  # extension: the output exceeds the record limit


class _Message(BaseModel):
    # a field added by a newer headway is ignored, never an error; the JSON Schema says so
    model_config = ConfigDict(
        extra="ignore", frozen=True, json_schema_extra={"additionalProperties": True}
    )


class ChatOutput(_Message):
    text: str
    finish_reason: str


class EmbeddingOutput(_Message):
    embeddings: list[list[float]]


class TokenUsage(_Message):
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    estimated: bool = Field(
        default=False,
        description="headway extension: the provider reported no token counts; these are "
        "headway's estimate",
    )


class JobError(_Message):
    code: ErrorCode
    message: str


class JobResult(_Message):
    """The one terminal result of a (tenant, job_id)."""

    job_id: str
    tenant: str
    batch_id: str | None = None
    kind: JobKind | None = None
    route: str | None = None
    metadata: dict[str, Any] | None = None
    template: str | None = Field(
        default=None, description="headway extension: the prompt template rendered, if any"
    )
    template_version: int | None = Field(
        default=None, ge=1, description="headway extension: the version of that template"
    )
    guardrail_flags: list[str] | None = Field(
        default=None,
        description="headway extension: what the job's guardrails noticed and let through",
    )
    status: JobStatus
    output: ChatOutput | EmbeddingOutput | None = None
    provider: str | None = None
    deployment: str | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost_usd: float = Field(default=0.0, ge=0)
    cached: bool = False
    attempts: int = Field(default=0, ge=0)
    error: JobError | None = None
    completed_at: AwareDatetime
    output_expired: bool | None = Field(
        default=None,
        description="headway extension: true on a result republished for a job redelivered "
        "after the ledger's results window (HEADWAY_RETAIN_RESULTS_H): status, usage and cost "
        "are as stored, the output is no longer kept (the result topic holds the original)",
    )


class UsageEvent(_Message):
    """One provider call's (or cache hit's) tokens and cost attributed to one job."""

    event_id: str
    tenant: str
    job_id: str
    batch_id: str | None = None
    route: str
    provider: str
    deployment: str
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cost_usd: float = Field(ge=0)
    cached: bool = False
    timestamp: datetime
    estimated: bool = Field(
        default=False,
        description="headway extension: tokens (and so cost) estimated; the provider reported none",
    )
