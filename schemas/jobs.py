"""JobRequest: what producers publish to ``headway.jobs.{high,normal,low}`` (CONTRACT §2)."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

METADATA_MAX_BYTES = 16 * 1024
EMBEDDING_MAX_INPUTS = 2048

JobId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
]
#: A tenant is an identity (quotas, budgets, secrets, results): one spelling per tenant, so
#: lowercase ASCII letters, digits, '.', '_' and '-', starting with a letter or digit ('ACME',
#: 'acme ' and a Cyrillic 'аcme' are refused rather than becoming other tenants).
TENANT_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
TenantName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=TENANT_PATTERN)]
#: Names kept in the ledger's columns and in headers: printable text, no control characters.
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
PrintableName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=PRINTABLE_PATTERN)
]
BatchId = PrintableName
#: A legal Kafka topic name (what a broker accepts; '.' and '..' are refused as well).
TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"
TopicName = Annotated[str, StringConstraints(min_length=1, max_length=249, pattern=TOPIC_PATTERN)]
#: the widest integer a ledger column holds (a template version)
INT32_MAX = 2**31 - 1
INT64 = (-(2**63), 2**63 - 1)


class JobKind(StrEnum):
    CHAT = "chat"
    EMBEDDING = "embedding"


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Message(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class TemplateRef(_Strict):
    name: PrintableName
    version: int | None = Field(
        default=None, ge=1, le=INT32_MAX, description="default: the latest version"
    )
    variables: dict[str, str] = Field(default_factory=dict)


class Params(_Strict):
    """Generation parameters. Unknown keys are rejected, never silently dropped."""

    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=INT64[0], le=INT64[1])
    dimensions: int | None = Field(default=None, ge=1, le=65_536)
    response_format: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_is_short(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not 1 <= len(value) <= 4:
            raise ValueError("stop takes 1 to 4 sequences")
        return value


EmbeddingInput = str | Annotated[list[str], Field(min_length=1, max_length=EMBEDDING_MAX_INPUTS)]


class JobRequest(_Strict):
    """One inference job. ``job_id`` is the idempotency key within a tenant."""

    job_id: JobId
    tenant: TenantName
    kind: JobKind
    route: PrintableName
    messages: Annotated[list[Message], Field(min_length=1)] | None = None
    template: TemplateRef | None = None
    input: EmbeddingInput | None = None
    params: Params | None = None
    priority: Priority | None = None
    batch_id: BatchId | None = None
    deadline: AwareDatetime | None = None
    max_cost_usd: Annotated[float, Field(ge=0)] | None = None
    reply_topic: TopicName | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("reply_topic")
    @classmethod
    def _reply_topic_is_a_name(cls, value: str | None) -> str | None:
        if value in (".", ".."):
            raise ValueError("'.' and '..' are not topic names")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_is_small(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
            if size > METADATA_MAX_BYTES:
                raise ValueError(f"metadata is {size} bytes serialized; the limit is 16 KiB")
        return value

    @model_validator(mode="after")
    def _body_matches_kind(self) -> JobRequest:
        if self.kind is JobKind.CHAT:
            if self.input is not None:
                raise ValueError("input: not allowed for kind 'chat' (use messages or template)")
            if (self.messages is None) == (self.template is None):
                raise ValueError("messages: a chat job needs exactly one of messages or template")
        else:
            if self.messages is not None or self.template is not None:
                raise ValueError("messages: not allowed for kind 'embedding' (use input)")
            if self.input is None:
                raise ValueError("input: required for kind 'embedding'")
        return self

    @property
    def inputs(self) -> list[str]:
        """Embedding inputs as a list, whatever form the request used."""
        if self.input is None:
            return []
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def expired(self, now: datetime) -> bool:
        return self.deadline is not None and now >= self.deadline
