"""AuditRecord: one line of ``headway audit --json`` — what the audit trail keeps of one
stored terminal result (issue 24 §4). An output: readers ignore fields they do not know."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class AuditRecord(BaseModel):
    model_config = ConfigDict(
        extra="ignore", frozen=True, json_schema_extra={"additionalProperties": True}
    )

    tenant: str
    job_id: str
    batch_id: str | None = None
    kind: str | None = None
    route: str | None = None
    template: str | None = None
    template_version: int | None = None
    submitted_at: AwareDatetime | None = Field(
        default=None, description="the job record's timestamp"
    )
    completed_at: AwareDatetime
    signed_by: str | None = Field(
        default=None,
        description="the tenant's signing key that signed the job: `<signing_secret_env>#<key "
        "id>` (the id is an HMAC of a fixed label under the key, never the key); null: unsigned",
    )
    provider: str | None = None
    deployment: str | None = None
    region: str | None = None
    guardrails: dict[str, Any] | None = Field(
        default=None,
        description="the guardrails' decisions: `flags` noticed and let through, `blocked` "
        "the reason a job was refused",
    )
    status: str
    error_code: str | None = None
    attempts: int = Field(ge=0)
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cost_usd: float = Field(ge=0)
    request_sha256: str | None = Field(
        default=None,
        description="SHA-256 of the job record's value exactly as received (the JobRequest "
        "bytes a headway-signature covers, prompt included)",
    )
    result_sha256: str | None = Field(
        default=None,
        description="SHA-256 of the result record's value exactly as published (the JobResult "
        "bytes, output included)",
    )
    capture: Literal["digest", "redacted", "full"] | str
    captured_prompt: Any = Field(
        default=None, description="the prompt kept (redacted or whole); null past its retention"
    )
    captured_output: Any = None
