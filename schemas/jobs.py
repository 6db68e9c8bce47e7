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
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.content import (
    MAX_TOOLS,
    STRUCTURE_ONLY,
    Content,
    ToolCall,
    ToolChoice,
    Tools,
    check_response_format,
)

METADATA_MAX_BYTES = 16 * 1024
#: counts a job may hold (each parsed element costs a worker memory: ~500 bytes a message or
#: part, whatever its text): OpenAI's own limits where it has one, else well above real use
EMBEDDING_MAX_INPUTS = 2048  # OpenAI's limit on inputs per embeddings request
MAX_MESSAGES = 2048  # as many as embedding inputs; real conversations are far shorter
MAX_PARTS_PER_JOB = 2048  # content parts across a job's messages (500 in one message)
MAX_TOOL_CALLS_PER_JOB = 2048  # tool calls across a job's messages (128 in one: OpenAI's)
MAX_VARIABLES = 256  # a template's variables
MAX_LOGIT_BIAS = 1024  # biased tokens (OpenAI documents no count; a vocabulary ban list)

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


Role = Literal["system", "developer", "user", "assistant", "tool"]


class Message(_Strict):
    """One chat message in OpenAI's shape: text, or content parts (images and files in user
    messages), an assistant's tool calls, or a tool's answer to one of them."""

    role: Role
    content: Content | None = None
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    tool_calls: Annotated[list[ToolCall], Field(min_length=1, max_length=MAX_TOOLS)] | None = None
    tool_call_id: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None

    @model_validator(mode="after")
    def _fits_its_role(self) -> Message:
        role, content = self.role, self.content
        if self.tool_calls is not None and role != "assistant":
            raise ValueError(f"tool_calls: only an assistant message has them, not {role!r}")
        if (self.tool_call_id is None) != (role != "tool"):
            raise ValueError("tool_call_id: a tool message needs one, and only a tool message")
        if content is None and self.tool_calls is None:
            raise ValueError("content: required (an assistant message may have tool_calls)")
        if isinstance(content, list) and role != "user":
            for index, part in enumerate(content):
                if part.type != "text":
                    raise ValueError(
                        f"content.{index}: {part.type} parts are for user messages, not {role!r}"
                    )
        return self

    @property
    def plain(self) -> bool:
        """Only a role and text: what every provider takes as it is."""
        return (
            isinstance(self.content, str)
            and self.tool_calls is None
            and self.name is None
            and self.tool_call_id is None
        )


class TemplateRef(_Strict):
    name: PrintableName
    version: int | None = Field(
        default=None, ge=1, le=INT32_MAX, description="default: the latest version"
    )
    variables: dict[str, str] = Field(default_factory=dict, max_length=MAX_VARIABLES)


class Params(_Strict):
    """Generation parameters. Unknown keys are rejected, never silently dropped."""

    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=INT64[0], le=INT64[1])
    dimensions: int | None = Field(default=None, ge=1, le=65_536)
    response_format: dict[str, Any] | None = None
    # the rest of OpenAI's chat-completions and embeddings fields; which provider types honour
    # each is workers/providers/features.py's table (a job is never sent where one is dropped)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    n: int | None = Field(default=None, ge=1, le=128)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: (
        Annotated[
            dict[str, Annotated[int, Field(ge=-100, le=100)]], Field(max_length=MAX_LOGIT_BIAS)
        ]
        | None
    ) = None
    tools: Tools | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    modalities: list[Literal["text"]] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    service_tier: Annotated[str, StringConstraints(max_length=64)] | None = None
    store: bool | None = None
    metadata: dict[str, Annotated[str, StringConstraints(max_length=512)]] | None = Field(
        default=None,
        max_length=16,
        description="OpenAI's stored-completion metadata, sent as it is (not the job's metadata)",
    )
    user: Annotated[str, StringConstraints(max_length=256)] | None = None
    safety_identifier: Annotated[str, StringConstraints(max_length=256)] | None = None
    prompt_cache_key: Annotated[str, StringConstraints(max_length=256)] | None = None
    encoding_format: Literal["float", "base64"] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_is_short(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not 1 <= len(value) <= 4:
            raise ValueError("stop takes 1 to 4 sequences")
        return value

    @field_validator("response_format")
    @classmethod
    def _a_response_format(
        cls, value: dict[str, Any] | None, info: ValidationInfo
    ) -> dict[str, Any] | None:
        if value is None:
            return None
        return check_response_format(value, deep=info.context != STRUCTURE_ONLY)

    @model_validator(mode="after")
    def _consistent(self) -> Params:
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("max_completion_tokens: set it or max_tokens, not both")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs = true")
        if self.tools is None:
            if self.tool_choice not in (None, "none") or self.parallel_tool_calls is not None:
                raise ValueError("tool_choice: needs tools")
        elif not isinstance(self.tool_choice, str | None):
            names = {tool.function.name for tool in self.tools}
            if self.tool_choice.function.name not in names:
                raise ValueError(f"tool_choice: no tool named {self.tool_choice.function.name!r}")
        return self

    @property
    def output_limit(self) -> int | None:
        """The output tokens one answer may have, whichever field set it."""
        return self.max_completion_tokens or self.max_tokens


#: parameters of one kind only: set on a job of the other kind they would be dropped, so refused
EMBEDDING_ONLY = frozenset({"dimensions", "encoding_format"})
SHARED_PARAMS = frozenset({"user"})


EmbeddingInput = str | Annotated[list[str], Field(min_length=1, max_length=EMBEDDING_MAX_INPUTS)]


class JobRequest(_Strict):
    """One inference job. ``job_id`` is the idempotency key within a tenant."""

    job_id: JobId
    tenant: TenantName
    kind: JobKind
    route: PrintableName
    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)] | None = None
    template: TemplateRef | None = None
    input: EmbeddingInput | None = None
    params: Params | None = None
    priority: Priority | None = None
    batch_id: BatchId | None = None
    deadline: AwareDatetime | None = None
    max_cost_usd: Annotated[float, Field(ge=0)] | None = None
    #: the cap of this job's batch (USD, the batch's whole life): the first job to carry it
    #: sets it; jobs carrying another value are refused until an operator sets the cap
    batch_budget_usd: Annotated[float, Field(ge=0, le=1e9)] | None = None
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
        if self.batch_budget_usd is not None and self.batch_id is None:
            raise ValueError("batch_budget_usd: caps a batch; the job needs a batch_id")
        if self.kind is JobKind.CHAT:
            if self.input is not None:
                raise ValueError("input: not allowed for kind 'chat' (use messages or template)")
            if (self.messages is None) == (self.template is None):
                raise ValueError("messages: a chat job needs exactly one of messages or template")
            messages = self.messages or ()
            parts = sum(len(m.content) for m in messages if isinstance(m.content, list))
            if parts > MAX_PARTS_PER_JOB:
                raise ValueError(
                    f"messages: {parts:,} content parts in all; the limit is {MAX_PARTS_PER_JOB:,}"
                )
            calls = sum(len(m.tool_calls or ()) for m in messages)
            if calls > MAX_TOOL_CALLS_PER_JOB:
                raise ValueError(
                    f"messages: {calls:,} tool calls in all; the limit is "
                    f"{MAX_TOOL_CALLS_PER_JOB:,}"
                )
        else:
            if self.messages is not None or self.template is not None:
                raise ValueError("messages: not allowed for kind 'embedding' (use input)")
            if self.input is None:
                raise ValueError("input: required for kind 'embedding'")
        if self.params is not None:
            for name in self.params.model_fields_set:
                if getattr(self.params, name) is None or name in SHARED_PARAMS:
                    continue
                if (name in EMBEDDING_ONLY) != (self.kind is JobKind.EMBEDDING):
                    raise ValueError(f"params.{name}: not a parameter of {self.kind.value} jobs")
        return self

    @property
    def inputs(self) -> list[str]:
        """Embedding inputs as a list, whatever form the request used."""
        if self.input is None:
            return []
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def expired(self, now: datetime) -> bool:
        return self.deadline is not None and now >= self.deadline
