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
    # a part or parameter of the job that no deployment of its route can take (issue 23)
    UNSUPPORTED_FEATURE = "unsupported_feature"
    # the provider's answer did not validate against the job's response_format schema, twice
    INVALID_OUTPUT = "invalid_output"
    # the provider refused the content (a safety/content-policy block), and no failover took it
    CONTENT_FILTERED = "content_filtered"
    # data residency: no deployment of the route is in a region the tenant and route allow
    REGION_UNAVAILABLE = "region_unavailable"


class _Message(BaseModel):
    # a field added by a newer headway is ignored, never an error; the JSON Schema says so
    model_config = ConfigDict(
        extra="ignore", frozen=True, json_schema_extra={"additionalProperties": True}
    )


class FunctionCallOut(_Message):
    name: str
    arguments: str  # JSON text, as the model wrote it (PII restored, if the job's policy says)


class ToolCallOut(_Message):
    """A tool call the model made, in OpenAI's shape whichever provider answered."""

    id: str
    type: str = "function"
    function: FunctionCallOut


class Choice(_Message):
    """One of the ``n`` answers of a job that asked for several."""

    index: int = Field(ge=0)
    text: str
    finish_reason: str
    tool_calls: list[ToolCallOut] | None = None
    refusal: str | None = None
    logprobs: dict[str, Any] | None = None
    parsed: Any | None = None


class ChatOutput(_Message):
    text: str
    finish_reason: str = Field(
        description="stop, length, tool_calls or content_filter (or the provider's own word)"
    )
    tool_calls: list[ToolCallOut] | None = Field(
        default=None, description="headway extension: the tool calls of the (first) answer"
    )
    refusal: str | None = Field(
        default=None, description="headway extension: the model's refusal text, if it refused"
    )
    parsed: Any | None = Field(
        default=None,
        description="headway extension: the answer as JSON, validated against the job's "
        "response_format json_schema (json_object: parsed only)",
    )
    logprobs: dict[str, Any] | None = Field(
        default=None, description="headway extension: OpenAI's logprobs object, as returned"
    )
    choices: list[Choice] | None = Field(
        default=None,
        description="headway extension: every answer when the job set n > 1 (the first is also "
        "text, finish_reason, tool_calls)",
    )
    system_fingerprint: str | None = Field(
        default=None, description="headway extension: the provider's system fingerprint"
    )


class EmbeddingOutput(_Message):
    embeddings: list[list[float]]
    encoding_format: str | None = Field(
        default=None,
        description="headway extension: the encoding the job asked for; vectors are always "
        "numbers here, `headway results --format openai-batch` writes base64 when asked",
    )


class TokenUsage(_Message):
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    estimated: bool = Field(
        default=False,
        description="headway extension: the provider reported no token counts; these are "
        "headway's estimate",
    )


class JobError(_Message):
    # open for readers: a code added by a newer headway reads as a plain string, never an error
    code: ErrorCode | str = Field(
        description="one of the codes listed, or a code a newer headway added (read it as text)"
    )
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
    region: str | None = Field(
        default=None,
        description="headway extension: the region of the deployment that served the job "
        "(its config's `region`), when it has one",
    )
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
    region: str | None = Field(
        default=None, description="headway extension: the deployment's region, when it has one"
    )
    tags: dict[str, str] | None = Field(
        default=None,
        description="headway extension: the job's metadata values under the keys its tenant's "
        "usage_tags name (non-strings as JSON text), for cost attribution",
    )
