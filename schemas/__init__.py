"""headway's public message schemas (CONTRACT.md §2–5).

Every message on a headway topic is a JSON object described by one of these models.
Outside clients need none of this package: the JSON Schemas generated from these models
are committed under ``schemas/json/``.
"""

from schemas.alerts import AlertEvent
from schemas.audit import AuditRecord
from schemas.control import ControlCommand
from schemas.jobs import (
    EmbeddingInput,
    JobKind,
    JobRequest,
    Message,
    Params,
    Priority,
    TemplateRef,
)
from schemas.results import (
    ChatOutput,
    EmbeddingOutput,
    ErrorCode,
    JobError,
    JobResult,
    JobStatus,
    TokenUsage,
    UsageEvent,
)

__all__ = [
    "AlertEvent",
    "AuditRecord",
    "ChatOutput",
    "ControlCommand",
    "EmbeddingInput",
    "EmbeddingOutput",
    "ErrorCode",
    "JobError",
    "JobKind",
    "JobRequest",
    "JobResult",
    "JobStatus",
    "Message",
    "Params",
    "Priority",
    "TemplateRef",
    "TokenUsage",
    "UsageEvent",
]
