"""A job's life as a batch-lane item: what the ledger keeps when the job is handed over
(:func:`new_item`) and what is read back from it — its provider call, its identity, its
original record — and how a provider's answer becomes an :class:`Execution` at the batch price.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord

from broker.config import DeploymentConfig
from broker.errors import ProviderInvalidOutput, UncheckableOutput
from broker.headers import restored_headers, stored_headers
from broker.topics import HEADER_ONLINE
from schemas.content import STRUCTURE_ONLY
from schemas.jobs import JobKind, JobRequest
from schemas.results import ChatOutput, EmbeddingOutput, ErrorCode, JobResult, JobStatus, TokenUsage
from workers.audit.facts import AuditFacts
from workers.content import structured
from workers.ledger import batch_lane_rows as rows
from workers.providers.base import ChatCall, ChatResponse, EmbeddingCall, WireMessages
from workers.providers.batch_apis import BatchAPI, Outcome
from workers.providers.requests import Execution, ProviderCall, embedding_output, provider_call
from workers.settle.outcomes import Identity, terminal_result


@dataclass(frozen=True, slots=True)
class Handed:
    """A job the pipeline gives to the lane (claimed, admitted, prepared)."""

    job: JobRequest
    who: Identity
    deployment: DeploymentConfig
    messages: WireMessages | None
    topic: str
    record: ConsumerRecord[bytes, bytes]
    generation: int
    budget_period: str | None = None


def custom_id(tenant: str, job_id: str) -> str:
    """A provider-safe id (Anthropic: ``[A-Za-z0-9_-]{1,64}``) unique per (tenant, job_id)."""
    return hashlib.sha256(f"{tenant}\x00{job_id}".encode()).hexdigest()[:40]


def new_item(handed: Handed, api: BatchAPI) -> rows.Item:
    """What the ledger keeps of a job handed to the lane: its provider request line, the job
    and identity to finish it with, and its original record to send it back online."""
    job, record = handed.job, handed.record
    cid = custom_id(job.tenant, job.job_id)
    line = api.line(cid, provider_call(job, handed.deployment, handed.messages))
    saved = {
        "job": job.model_dump(mode="json"),
        "messages": handed.messages,
        "budget_period": handed.budget_period,
    }
    headers = stored_headers(record.headers)
    return rows.Item(
        tenant=job.tenant,
        job_id=job.job_id,
        custom_id=cid,
        deployment_key=handed.deployment.key,
        kind=job.kind.value,
        line=line.decode(),
        job_json=json.dumps(saved),
        who_json=json.dumps(who_json(handed.who)),
        topic=handed.topic,
        record_value=base64.b64encode(record.value or b"").decode(),
        record_headers=json.dumps({"topic": record.topic, "headers": headers}),
        deadline=job.deadline.timestamp() if job.deadline is not None else None,
        generation=handed.generation,
    )


def saved_headers(saved_json: str) -> list[tuple[str, bytes | None]]:
    return restored_headers(json.loads(saved_json)["headers"])


def original_record(item: rows.Item) -> ConsumerRecord[bytes, bytes]:
    """The job's original record, as the publisher parks it (plus ``headway-online``)."""
    headers = [*saved_headers(item.record_headers), (HEADER_ONLINE, b"1")]
    topic = json.loads(item.record_headers)["topic"]
    value = base64.b64decode(item.record_value)
    key = item.job_id.encode()
    return ConsumerRecord(topic, 0, 0, 0, 0, key, value, None, len(key), len(value), headers)


def who_json(who: Identity) -> dict[str, Any]:
    data = {name: getattr(who, name) for name in Identity.__dataclass_fields__}
    data["kind"] = who.kind.value if who.kind is not None else None
    data["guardrail_flags"] = list(who.guardrail_flags)
    data["audit"] = who.audit.as_json() if who.audit is not None else None
    return data


def identity(data: dict[str, Any]) -> Identity:
    kind = JobKind(data["kind"]) if data.get("kind") else None
    flags = tuple(data.get("guardrail_flags") or ())
    audit = AuditFacts.from_json(data.get("audit"))  # absent: handed over before audits
    return Identity(**{**data, "kind": kind, "guardrail_flags": flags, "audit": audit})


@dataclass(frozen=True, slots=True)
class Saved:
    """What :func:`new_item` kept of a handed-over job, read back once."""

    job: JobRequest
    messages: WireMessages | None
    budget_period: str | None  # the period its cost counts in: the one it was admitted in

    @classmethod
    def of(cls, item: rows.Item) -> Saved:
        saved = json.loads(item.job_json)
        # checked in full before it was handed over: its schema's structure is enough now
        job = JobRequest.model_validate(saved["job"], context=STRUCTURE_ONLY)
        return cls(job, saved["messages"], saved.get("budget_period"))


def call_of(item: rows.Item, deployment: DeploymentConfig) -> ChatCall | EmbeddingCall:
    saved = Saved.of(item)
    return provider_call(saved.job, deployment, saved.messages)


async def execution_of(
    deployment: DeploymentConfig, outcome: Outcome, job: JobRequest
) -> Execution:
    execution = Execution(attempts=1)
    if outcome.error is not None:
        execution.error = outcome.error
        return execution
    reply = outcome.reply
    assert reply is not None
    checked: ChatOutput | structured.Invalid | None = None
    output: ChatOutput | EmbeddingOutput
    if isinstance(reply, ChatResponse):
        output = answer = reply.output()
        tokens_in, tokens_out = reply.input_tokens, reply.output_tokens
        schema = structured.expected(job.params.response_format) if job.params else None
        if schema is not None:
            checked = await structured.checked_output(answer, schema, tenant=job.tenant)
            output = checked if isinstance(checked, ChatOutput) else answer
    else:
        output = embedding_output(job, reply.embeddings)
        tokens_in, tokens_out = reply.input_tokens, 0
    call = _batch_call(deployment, tokens_in, tokens_out, reply.estimated)
    if isinstance(checked, structured.Invalid):  # paid for, not valid: asked again online
        execution.calls = [call]
        invalid = UncheckableOutput if checked.unusable else ProviderInvalidOutput
        execution.error = invalid(
            f"the answer does not match response_format (Batch API): {checked.reason}",
            provider=deployment.provider,
        )
        return execution
    execution.output, execution.served_by, execution.calls = output, call, [call]
    return execution


def _batch_call(
    deployment: DeploymentConfig, tokens_in: int, tokens_out: int, estimated: bool
) -> ProviderCall:
    return ProviderCall(
        provider=deployment.provider,
        deployment=deployment,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost_usd=deployment.batch_cost_usd(tokens_in, tokens_out),
        estimated=estimated,
    )


def paid_call(deployment: DeploymentConfig, outcome: Outcome) -> ProviderCall | None:
    """The batch call an answer was paid for, by its reported tokens (None: no answer)."""
    reply = outcome.reply
    if reply is None:
        return None
    tokens_out = reply.output_tokens if isinstance(reply, ChatResponse) else 0
    return _batch_call(deployment, reply.input_tokens, tokens_out, reply.estimated)


@dataclass(frozen=True, slots=True)
class Prepared:
    """An item's result, ready to be stored, and the calls its usage events count."""

    result: JobResult
    calls: list[ProviderCall]


def unsettled(who: Identity, error: Exception, paid: list[ProviderCall]) -> Prepared:
    """The result of an item headway could not settle (a check that broke on its answer):
    ``failed``/``internal_error`` naming the error's type (never its text, which may quote
    the answer), with the calls it was paid for counted."""
    message = (
        f"the Batch API's answer to this job could not be settled ({type(error).__name__}); "
        "the other jobs of its provider batch were"
    )
    result = terminal_result(who, JobStatus.FAILED, ErrorCode.INTERNAL_ERROR, message)
    usage = TokenUsage(
        input_tokens=sum(call.input_tokens for call in paid),
        output_tokens=sum(call.output_tokens for call in paid),
        estimated=any(call.estimated for call in paid),
    )
    update: dict[str, Any] = {"usage": usage, "cost_usd": sum(c.cost_usd for c in paid)}
    if paid:
        update |= {"provider": paid[-1].provider, "attempts": len(paid)}
    return Prepared(result.model_copy(update=update), list(paid))
