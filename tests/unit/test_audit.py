"""What a job's audit record says, on in-memory fakes: digests a reader recomputes from what it
sent and received, the signing key named without revealing it, captures by the tenant's
policy (redacted with its guardrails' PII kinds, or all kinds), the guardrails' decisions, and a
record only for a result that was stored."""

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


def canonical_sha256(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def job(tenant: str, **overrides: Any) -> JobRequest:
    raw = chat_job("j", tenant=tenant, **overrides)
    return JobRequest.model_validate(raw)


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


def test_the_prompt_digest_is_what_a_reader_recomputes_from_the_json_it_sent() -> None:
    auditor = Auditor(CONFIG, {})
    parts = [{"role": "user", "content": [{"type": "text", "text": "ünïcode"}], "name": "n"}]
    for sent, field in (
        (chat_job("j", tenant="plain", messages=[{"role": "user", "content": TEXT}]), "messages"),
        (chat_job("j", tenant="plain", messages=parts), "messages"),
        (chat_job("j", tenant="plain", messages=None, template={"name": "t"}), "template"),
        (
            {"job_id": "j", "tenant": "plain", "kind": "embedding", "route": "embed",
             "input": ["a", "b"]},
            "input",
        ),
    ):  # fmt: skip
        facts = auditor.facts(JobRequest.model_validate(sent), 1_764_720_000_000)
        assert facts.prompt_sha256 == canonical_sha256(sent[field])
        assert facts.submitted_at == 1_764_720_000.0
        assert (facts.capture, facts.prompt_text) == ("digest", None)


def test_a_signing_key_is_named_by_its_variable_and_an_id_that_does_not_reveal_it() -> None:
    named = key_id("ACME_SECRET", b"s3cret-value")
    assert named.startswith("ACME_SECRET#") and len(named) == len("ACME_SECRET#") + 12
    assert "s3cret" not in named and named == key_id("ACME_SECRET", b"s3cret-value")
    assert named != key_id("ACME_SECRET", b"another-secret")  # a rotated key reads differently
    auditor = Auditor(CONFIG, {"plain": named})
    assert auditor.facts(job("plain"), None).signed_by == named
    assert auditor.facts(job("whole"), None).signed_by is None


def test_captures_follow_the_tenants_policy_and_its_guardrails_pii_kinds() -> None:
    auditor = Auditor(CONFIG, {})
    messages = [{"role": "user", "content": TEXT}]
    whole = auditor.facts(job("whole", messages=messages), None)
    assert whole.prompt_text is not None and json.loads(whole.prompt_text) == messages
    careful = auditor.facts(job("careful", messages=messages), None)
    assert careful.pii == ("email", "phone")  # the tenant's policy and the route's
    assert json.loads(careful.prompt_text or "") == [
        {"role": "user", "content": "Mail [EMAIL_1] or call [PHONE_1]"}
    ]
    raw = json.loads(CONFIG.model_dump_json())
    raw["routes"]["summarize"]["guardrails"] = []
    raw["tenants"]["careful"]["guardrails"] = []
    elsewhere = config_of(raw)
    unguarded = Auditor(elsewhere, {}).facts(job("careful", messages=messages), None)
    assert "ip" in unguarded.pii and "secret" in unguarded.pii  # … then every kind


def test_the_record_part_beyond_the_finish_digests_the_output_and_names_decisions() -> None:
    facts = AuditFacts(1.0, "K#1", "p" * 64, "redacted", "[]", ("email",))
    done = entry(result(guardrail_flags=["injection"]), facts)
    assert done.output_sha256 == canonical_sha256(result().output.model_dump(mode="json"))  # type: ignore[union-attr]
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
    refused = entry(blocked, None)  # a job whose request could not be read: what is known
    assert (refused.output_sha256, refused.prompt_sha256, refused.output_text) == (None,) * 3
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
    assert audit.prompt_sha256 == canonical_sha256(sent["messages"])
    published = built.ledger.finished("whole", "a-1")
    assert audit.output_sha256 == canonical_sha256(published["output"])
    assert (audit.region, audit.capture) == ("eu-west", "full")
    assert json.loads(audit.output_text or "") == published["output"]
