"""Building the messages a job ends with: its JobResult and its UsageEvents."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from broker.config import TenantConfig
from broker.errors import ProviderContentFiltered, ProviderError, ProviderInvalidOutput
from broker.topics import Topics
from schemas.jobs import PRINTABLE_PATTERN, JobKind, JobRequest
from schemas.results import (
    ChatOutput,
    ErrorCode,
    JobError,
    JobResult,
    JobStatus,
    TokenUsage,
    UsageEvent,
)
from workers.audit.facts import AuditFacts
from workers.audit.facts import entry as audit_entry
from workers.content import texts
from workers.ledger.cache_rows import CacheEntry
from workers.ledger.database.models import RowStatus, to_nano
from workers.ledger.records import Finish, UsageRecord
from workers.providers.requests import Execution, ProviderCall
from workers.telemetry.logs import redact

if TYPE_CHECKING:
    from workers.guardrails.screening import Screened

# a name of at most 128 printable characters (batch_id, route)
_PRINTABLE = re.compile(PRINTABLE_PATTERN.replace("+$", "{1,128}$"))
_EVENT_NAMESPACE = uuid.UUID("6f1b8a1e-3c55-4c8e-9a4e-1d0f6a7b9c21")
_EVENT_NAMESPACE_BYTES = _EVENT_NAMESPACE.bytes


@dataclass(frozen=True, slots=True)
class Identity:
    """What a result echoes from its request (possibly partial for an invalid one)."""

    job_id: str
    tenant: str
    batch_id: str | None = None
    kind: JobKind | None = None
    route: str | None = None
    metadata: dict[str, Any] | None = None
    template: str | None = None  # the prompt template and version rendered, when one was
    template_version: int | None = None
    guardrail_flags: tuple[str, ...] = ()  # what guardrails noticed and allowed
    # not echoed: what the job's audit record keeps of its request (None: nothing was read)
    audit: AuditFacts | None = None

    @classmethod
    def of(cls, job: JobRequest, audit: AuditFacts | None = None) -> Identity:
        return cls(
            job.job_id, job.tenant, job.batch_id, job.kind, job.route, job.metadata, audit=audit
        )

    @classmethod
    def from_raw(cls, job_id: str, tenant: str, raw: dict[str, Any]) -> Identity:
        batch_id = raw.get("batch_id")
        kind = raw.get("kind")
        route = raw.get("route")
        metadata = raw.get("metadata")
        return cls(
            job_id,
            tenant,
            batch_id if _printable(batch_id) else None,
            JobKind(kind) if kind in ("chat", "embedding") else None,
            route if _printable(route) else None,
            metadata if isinstance(metadata, dict) and len(str(metadata)) <= 16384 else None,
        )


def _printable(value: Any) -> bool:
    """A name the ledger's columns can hold (what the job schema allows)."""
    return isinstance(value, str) and _PRINTABLE.match(value) is not None


def result_topic(job: JobRequest | None, tenant: TenantConfig | None, topics: Topics) -> str:
    """reply_topic when the tenant's allowlist admits it, else the tenant's topic, else default."""
    if (
        job is not None
        and job.reply_topic
        and tenant is not None
        and any(fnmatchcase(job.reply_topic, pattern) for pattern in tenant.reply_topics)
    ):
        return job.reply_topic
    if tenant is not None and tenant.results_topic:
        return tenant.results_topic
    return topics.results


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Ending:
    """How a job ends without an answer: its status, error code and message."""

    status: JobStatus
    code: ErrorCode
    message: str

    @classmethod
    def rejected(cls, code: ErrorCode, message: str) -> Ending:
        return cls(JobStatus.REJECTED, code, message)


CANCELLED = Ending(JobStatus.CANCELLED, ErrorCode.CANCELLED, "cancelled by a control command")
EXPIRED_BEFORE_START = Ending(
    JobStatus.EXPIRED, ErrorCode.DEADLINE_EXCEEDED, "deadline passed before start"
)
EXPIRED_DURING_CALL = Ending(
    JobStatus.EXPIRED, ErrorCode.DEADLINE_EXCEEDED, "deadline passed during the call"
)


def terminal_result(
    who: Identity, status: JobStatus, code: ErrorCode, message: str, attempts: int = 0
) -> JobResult:
    return JobResult(
        job_id=who.job_id,
        tenant=who.tenant,
        batch_id=who.batch_id,
        kind=who.kind,
        route=who.route,
        metadata=who.metadata,
        template=who.template,
        template_version=who.template_version,
        guardrail_flags=list(who.guardrail_flags) or None,
        status=status,
        attempts=attempts,
        error=JobError(code=code, message=redact(message)),
        completed_at=now_utc(),
    )


def executed_result(who: Identity, execution: Execution) -> JobResult:
    served = execution.served_by
    calls = execution.calls
    usage = TokenUsage(
        input_tokens=sum(c.input_tokens for c in calls),
        output_tokens=sum(c.output_tokens for c in calls),
        estimated=any(c.estimated for c in calls),
    )
    common: dict[str, Any] = {
        "job_id": who.job_id,
        "tenant": who.tenant,
        "batch_id": who.batch_id,
        "kind": who.kind,
        "route": who.route,
        "metadata": who.metadata,
        "template": who.template,
        "template_version": who.template_version,
        "guardrail_flags": list(who.guardrail_flags) or None,
        "usage": usage,
        "cost_usd": sum(c.cost_usd for c in calls),
        "cached": any(c.cached for c in calls),
        "attempts": execution.attempts,
        "completed_at": now_utc(),
    }
    if execution.output is not None and served is not None:
        return JobResult(
            status=JobStatus.SUCCEEDED,
            output=execution.output,
            provider=served.provider,
            deployment=served.deployment.model,
            region=served.deployment.region,
            **common,
        )
    error = execution.error
    message = redact(str(error)) if error is not None else "no deployment could serve the job"
    return JobResult(
        status=JobStatus.FAILED,
        error=JobError(code=_code(error), message=message),
        provider=error.provider if error is not None else None,
        **common,
    )


def _code(error: ProviderError | None) -> ErrorCode:
    if isinstance(error, ProviderContentFiltered):
        return ErrorCode.CONTENT_FILTERED
    if isinstance(error, ProviderInvalidOutput):
        return ErrorCode.INVALID_OUTPUT
    return ErrorCode.PROVIDER_ERROR


async def guarded_result(
    who: Identity, execution: Execution, screened: Screened | None
) -> JobResult:
    """The result of an executed job after its output guardrails: the output may be rewritten
    (PII restored) or withheld (``rejected``/``content_blocked`` — the call is still paid for)."""
    blocked: str | None = None
    output = execution.output
    if screened is not None and isinstance(output, ChatOutput):
        before = texts.output_texts(output)
        after = []
        for text in before:  # the answer's text and every tool call's arguments
            verdict = await screened.check_output(text)
            blocked = verdict.blocked
            if blocked is not None:
                break
            after.append(verdict.text if verdict.text is not None else text)
        if blocked is None and after != before:
            execution.output = texts.with_output_texts(output, after)
    if screened is not None:
        who = dataclasses.replace(who, guardrail_flags=tuple(screened.flags))
    result = executed_result(who, execution)
    if blocked is None:
        return result
    error = JobError(code=ErrorCode.CONTENT_BLOCKED, message=blocked)
    return result.model_copy(update={"status": JobStatus.REJECTED, "output": None, "error": error})


def event_id(tenant: str, job_id: str, generation: int, index: int) -> str:
    """Stable for the same provider call: the claim generation and the call's index.

    ``uuid.uuid5`` spelled out (SHA-1 of namespace + name, version and variant bits set): the
    same text at a third of the cost, which counts once per usage event."""
    name = f"{tenant}\x00{job_id}\x00{generation}\x00{index}".encode()
    digest = bytearray(hashlib.sha1(_EVENT_NAMESPACE_BYTES + name).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


#: the longest tag value kept (a longer metadata value is cut)
MAX_TAG_CHARS = 256


def usage_tags(metadata: dict[str, Any] | None, keys: Sequence[str]) -> dict[str, str] | None:
    """The job's metadata under ``keys`` as tags: strings as they are, other values as JSON."""
    if not keys or not metadata:
        return None
    tags = {}
    for key in keys:
        if key in metadata:
            value = metadata[key]
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            tags[key] = text[:MAX_TAG_CHARS]
    return tags or None


def usage_events(
    who: Identity, calls: list[ProviderCall], generation: int, tag_keys: Sequence[str] = ()
) -> list[UsageEvent]:
    tags = usage_tags(who.metadata, tag_keys)
    return [
        UsageEvent(
            event_id=event_id(who.tenant, who.job_id, generation, index),
            tenant=who.tenant,
            job_id=who.job_id,
            batch_id=who.batch_id,
            route=who.route or "",
            provider=call.provider,
            deployment=call.deployment.model,
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            cost_usd=call.cost_usd,
            cached=call.cached,
            timestamp=now_utc(),
            estimated=call.estimated,
            region=call.deployment.region,
            tags=tags,
        )
        for index, call in enumerate(calls)
    ]


def finish_record(
    result: JobResult,
    result_json: str,
    events: list[tuple[UsageEvent, str]],
    *,
    budget_period: str | None = None,
    cache: CacheEntry | None = None,
    audit: AuditFacts | None = None,
) -> Finish:
    """What the ledger stores of a terminal result: the job's row, its usage events, the
    budget settlement, a cache entry, and its audit record (``audit``: what was known of the
    request)."""
    return Finish(
        tenant=result.tenant,
        job_id=result.job_id,
        status=RowStatus(result.status.value),
        result_json=result_json,
        completed_at=result.completed_at.timestamp(),
        batch_id=result.batch_id,
        kind=result.kind.value if result.kind else None,
        route=result.route,
        provider=result.provider,
        deployment=result.deployment,
        attempts=result.attempts,
        input_tokens=result.usage.input_tokens,
        output_tokens=result.usage.output_tokens,
        cost_nusd=sum(to_nano(event.cost_usd) for event, _ in events),
        usage=tuple(
            UsageRecord(
                event_id=event.event_id,
                route=event.route,
                provider=event.provider,
                deployment=event.deployment,
                input_tokens=event.input_tokens,
                output_tokens=event.output_tokens,
                cost_nusd=to_nano(event.cost_usd),
                cached=event.cached,
                timestamp=event.timestamp.timestamp(),
                payload=payload,
                tags=json.dumps(event.tags, sort_keys=True) if event.tags else None,
            )
            for event, payload in events
        ),
        budget_period=budget_period,
        cache=cache,
        audit=audit_entry(result, result_json, audit),
    )
