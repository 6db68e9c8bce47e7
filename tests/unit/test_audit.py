"""What a job's audit record says, on in-memory fakes: digests of the exact request and result
bytes, the signing key named without revealing it, captures by the tenant's policy (redacted
with its guardrails' PII kinds, or all kinds), the guardrails' decisions, and a record only for
a result that was stored."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from broker.config import HeadwayConfig
from schemas.jobs import JobRequest
from schemas.results import ErrorCode, JobError, JobResult, JobStatus
from tests.fakes import ScriptedProvider, config_of, pipeline_for
from tests.helpers import chat_job
from workers.audit.facts import AuditFacts, Auditor, entry, key_id
from workers.batch_lane.items import identity, who_json
from workers.providers.base import ChatResponse
from workers.settle.outcomes import Identity

CONFIG: HeadwayConfig = config_of(
    {
        "providers": {"p": {"type": "openai", "base_url": "http://127.0.0.1:9"}},
        "routes": {
            "summarize": {
                "kind": "chat",
                "deployments": [{"provider": "p", "model": "m", "region": "eu-west"}],
                "guardrails": ["phones"],
            },
            "embed": {"kind": "embedding", "deployments": [{"provider": "p", "model": "e"}]},
        },
        "guardrails": {"mails": {"redact_pii": ["email"]}, "phones": {"redact_pii": ["phone"]}},
        "tenants": {
            "plain": {},
            "whole": {"audit_capture": "full"},
            "careful": {"audit_capture": "redacted", "guardrails": ["mails"]},
        },
    }
)
TEXT = "Mail ann@example.com or call +44 20 7946 0958"


def job(tenant: str, **overrides: Any) -> JobRequest:
    raw = chat_job("j", tenant=tenant, **overrides)
    return JobRequest.model_validate(raw)


def facts_of(
    auditor: Auditor,
    request: JobRequest,
    value: bytes = b"",
    timestamp_ms: int | None = None,
    config: HeadwayConfig = CONFIG,
) -> AuditFacts:
    """What the pipeline asks of the auditor for a job read from ``value``."""
    return auditor.facts(request, config.tenant(request.tenant), value, timestamp_ms)


def result(**overrides: Any) -> JobResult:
    values: dict[str, Any] = {
        "job_id": "j",
        "tenant": "careful",
        "status": "succeeded",
        "output": {"text": f"Done: {TEXT}", "finish_reason": "stop"},
        "completed_at": datetime(2026, 12, 3, tzinfo=UTC),
        "region": "eu-west",
    }
    return JobResult.model_validate({**values, **overrides})


def test_the_request_digest_is_of_the_bytes_received_and_captures_keep_the_prompt_as_given() -> (
    None
):
    parts = [{"role": "user", "content": [{"type": "text", "text": "ünïcode"}], "name": "n"}]
    embedding = {"job_id": "j", "tenant": "whole", "kind": "embedding", "route": "embed",
                 "input": ["a", "b"]}  # fmt: skip
    for sent, field in (
        (chat_job("j", tenant="whole", messages=[{"role": "user", "content": TEXT}]), "messages"),
        (chat_job("j", tenant="whole", messages=parts), "messages"),
        (chat_job("j", tenant="whole", messages=None, template={"name": "t"}), "template"),
        (embedding, "input"),
    ):
        value = json.dumps(sent).encode()
        request = JobRequest.model_validate_json(value)
        facts = facts_of(Auditor(CONFIG, {}), request, value, 1_764_720_000_000)
        assert facts.request_sha256 == hashlib.sha256(value).hexdigest()
        assert facts.submitted_at == 1_764_720_000.0
        assert json.loads(facts.prompt_text or "") == sent[field]  # as the job gave it
    plain = job("plain")
    assert facts_of(Auditor(CONFIG, {}), plain, b"{}").prompt_text is None  # digest only


def test_a_signing_key_is_named_by_its_variable_and_an_id_that_does_not_reveal_it() -> None:
    named = key_id("ACME_SECRET", b"s3cret-value")
    assert named.startswith("ACME_SECRET#") and len(named) == len("ACME_SECRET#") + 12
    assert "s3cret" not in named and named == key_id("ACME_SECRET", b"s3cret-value")
    assert named != key_id("ACME_SECRET", b"another-secret")  # a rotated key reads differently
    auditor = Auditor(CONFIG, {"plain": named})
    assert facts_of(auditor, job("plain")).signed_by == named
    assert facts_of(auditor, job("whole")).signed_by is None


def test_captures_follow_the_tenants_policy_and_its_guardrails_pii_kinds() -> None:
    auditor = Auditor(CONFIG, {})
    messages = [{"role": "user", "content": TEXT}]
    whole = facts_of(auditor, job("whole", messages=messages))
    assert whole.prompt_text is not None and json.loads(whole.prompt_text) == messages
    careful = facts_of(auditor, job("careful", messages=messages))
    assert careful.pii == ("email", "phone")  # the tenant's policy and the route's
    assert json.loads(careful.prompt_text or "") == [
        {"role": "user", "content": "Mail [EMAIL_1] or call [PHONE_1]"}
    ]
    raw = json.loads(CONFIG.model_dump_json())
    raw["routes"]["summarize"]["guardrails"] = []
    raw["tenants"]["careful"]["guardrails"] = []
    elsewhere = config_of(raw)
    unguarded = facts_of(
        Auditor(elsewhere, {}), job("careful", messages=messages), config=elsewhere
    )
    assert "ip" in unguarded.pii and "secret" in unguarded.pii  # … then every kind


def test_the_record_part_beyond_the_finish_digests_the_result_and_names_decisions() -> None:
    facts = AuditFacts(1.0, "K#1", "p" * 64, "redacted", "[]", ("email",))
    flagged = result(guardrail_flags=["injection"])
    done = entry(flagged, flagged.model_dump_json(), facts)
    assert done.result_sha256 == hashlib.sha256(flagged.model_dump_json().encode()).hexdigest()
    assert (
        json.loads(done.output_text or "")["text"]
        == "Done: Mail [EMAIL_1] or call +44 20 7946 0958"
    )
    assert (done.region, done.signed_by, done.capture) == ("eu-west", "K#1", "redacted")
    assert json.loads(done.guardrails or "") == {"flags": ["injection"]}
    blocked = result(
        status="rejected",
        output=None,
        error=JobError(code=ErrorCode.CONTENT_BLOCKED, message="blocked term 'x'"),
    )
    refused = entry(blocked, "{}", None)  # a job whose request could not be read: what is known
    assert (refused.request_sha256, refused.output_text) == (None, None)
    assert refused.error_code == "content_blocked"
    assert json.loads(refused.guardrails or "") == {"blocked": "blocked term 'x'"}
    assert refused.capture == "digest"


def test_facts_travel_with_a_job_handed_to_the_batch_lane() -> None:
    facts = AuditFacts(2.5, None, "d" * 64, "full", '[{"role":"user"}]')
    who = Identity("j", "plain", audit=facts)
    assert identity(json.loads(json.dumps(who_json(who)))).audit == facts
    before = {k: v for k, v in who_json(who).items() if k != "audit"}  # saved by an older one
    assert identity(before).audit is None


async def test_a_pipeline_writes_one_audit_record_with_the_result_it_stores() -> None:
    providers = {"p": ScriptedProvider("p", ChatResponse("hello", "stop", 10, 2))}
    built = pipeline_for(CONFIG, providers)
    sent = chat_job("a-1", tenant="whole")
    assert await built.pipeline.handle(built.record(sent)) is None
    assert await built.pipeline.handle(built.record(sent)) is None  # redelivered: no second
    [stored] = built.ledger.audits
    audit = stored.audit
    assert audit is not None and stored.status.value == JobStatus.SUCCEEDED.value
    assert audit.request_sha256 == hashlib.sha256(built.record(sent).value or b"").hexdigest()
    published = built.ledger.finished("whole", "a-1")
    stored = built.ledger.rows[("whole", "a-1")].result_json or ""
    assert audit.result_sha256 == hashlib.sha256(stored.encode()).hexdigest()
    assert (audit.region, audit.capture) == ("eu-west", "full")
    assert json.loads(audit.output_text or "") == published["output"]


async def test_a_job_that_never_ran_is_audited_with_the_digest_of_what_was_received() -> None:
    built = pipeline_for(CONFIG, {"p": ScriptedProvider("p")})
    invalid = {**chat_job("bad-1", tenant="plain"), "temperature": 3}  # not a field of a job
    record = built.record(invalid)
    assert await built.pipeline.handle(record) is None
    [stored] = built.ledger.audits
    assert stored.audit is not None and stored.status.value == JobStatus.REJECTED.value
    assert stored.audit.request_sha256 == hashlib.sha256(record.value or b"").hexdigest()
    assert stored.audit.error_code == "invalid_request" and stored.audit.signed_by is None
