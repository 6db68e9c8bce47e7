"""What a job's audit record says beyond its stored result.

Known before the job runs (:class:`AuditFacts`, worked out once from the request by
:class:`Auditor`): when it was submitted (its record's timestamp), which of its tenant's
signing keys signed it, the SHA-256 of the request that carried its prompt, and — for a tenant
with ``audit_capture = "redacted"`` or ``"full"`` — the prompt to keep. Known when it ends
(:func:`entry`): where it ran, the guardrails' decisions, status, cost, and the SHA-256 of the
result that carried its output.

**Digests of the bytes exchanged**: ``request_sha256`` is the SHA-256 of the job record's value
exactly as received — the bytes a ``headway-signature`` covers, prompt included — and
``result_sha256`` of the result record's value exactly as published (and stored: a redelivery
republishes the same bytes), output included. Anyone holding either record checks it against
the trail with one hash, in any language, with no canonical form to agree on; and both cost a
hash of bytes the worker already holds (the job's path pays ~2 µs, not a re-serialisation). A
redacted capture replaces PII in every string of the prompt and output by placeholders
(``[EMAIL_1]``) with the kinds the tenant's and route's guardrails redact — all kinds when
they name none.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from broker.config import HeadwayConfig, TenantConfig
from schemas.jobs import JobRequest
from schemas.results import ErrorCode, JobResult
from workers.guardrails.pii import PiiKind, Redaction
from workers.ledger.records import AuditEntry

KEY_ID_LABEL = b"headway signing key id"


@dataclass(frozen=True, slots=True)
class AuditFacts:
    submitted_at: float | None
    signed_by: str | None
    request_sha256: str | None
    capture: str = "digest"  # digest | redacted | full
    prompt_text: str | None = None  # the prompt kept (redacted or whole), when capturing
    pii: tuple[str, ...] = ()  # a redacted capture's PII kinds (the output's too)

    @classmethod
    def of_record(cls, value: bytes | None, timestamp_ms: int | None) -> AuditFacts:
        """What is known of a record that never became a runnable job (the poison path)."""
        return cls(_seconds(timestamp_ms), None, hashlib.sha256(value or b"").hexdigest())

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> AuditFacts | None:
        if not data:
            return None
        return cls(**{**data, "pii": tuple(data.get("pii") or ())})


def _submitted_at(facts: AuditFacts | None, result: JobResult) -> float | None:
    if facts is None or facts.submitted_at is None:
        return None
    return min(facts.submitted_at, result.completed_at.timestamp())


def _seconds(timestamp_ms: int | None) -> float | None:
    return None if timestamp_ms is None or timestamp_ms < 0 else timestamp_ms / 1000


def canonical(value: Any) -> str:
    """A capture's JSON text: keys sorted, no spaces, UTF-8 unescaped."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def prompt_of(job: JobRequest) -> Any:
    """The job's prompt as it gave it: messages, template reference, or embedding input."""
    if job.messages is not None:
        return [
            {"role": m.role, "content": m.content}
            if m.plain
            else m.model_dump(mode="json", exclude_unset=True)
            for m in job.messages
        ]
    if job.template is not None:
        return job.template.model_dump(mode="json", exclude_unset=True)
    return job.input


def key_id(variable: str, secret: bytes) -> str:
    """Names a signing key without revealing it: its variable and a keyed fingerprint."""
    return f"{variable}#{hmac.new(secret, KEY_ID_LABEL, hashlib.sha256).hexdigest()[:12]}"


def redacted(value: Any, redaction: Redaction) -> Any:
    """``value`` with PII in each of its strings replaced by placeholders."""
    if isinstance(value, str):
        return redaction.redact(value)
    if isinstance(value, list):
        return [redacted(item, redaction) for item in value]
    if isinstance(value, dict):
        return {key: redacted(item, redaction) for key, item in value.items()}
    return value


class Auditor:
    def __init__(self, config: HeadwayConfig, signers: Mapping[str, str]) -> None:
        """``signers``: tenant entry (its account) → the key id of its signing secret (a tenant
        without one accepts unsigned jobs: its records say no key)."""
        self._config = config
        self._signers = signers

    def facts(
        self, job: JobRequest, tenant: TenantConfig | None, value: bytes, timestamp_ms: int | None
    ) -> AuditFacts:
        """``tenant``: the job's tenant's settings (as the pipeline found them); ``value``: the
        job record's bytes as received."""
        capture = tenant.audit_capture if tenant is not None else "digest"
        kept: str | None = None
        pii: tuple[str, ...] = ()
        if capture == "full":
            kept = canonical(prompt_of(job))
        elif capture == "redacted":
            pii = self._pii_kinds(job, tenant)
            kept = canonical(redacted(prompt_of(job), Redaction(frozenset(map(PiiKind, pii)))))
        return AuditFacts(
            _seconds(timestamp_ms),
            self._signers.get(self._config.account(job.tenant)),
            hashlib.sha256(value).hexdigest(),
            capture,
            kept,
            pii,
        )

    def _pii_kinds(self, job: JobRequest, tenant: TenantConfig | None) -> tuple[str, ...]:
        route = self._config.routes.get(job.route)
        names = [*(tenant.guardrails if tenant else []), *(route.guardrails if route else [])]
        kinds = {k.value for n in names for k in self._config.guardrails[n].redact_pii}
        return tuple(sorted(kinds or {kind.value for kind in PiiKind}))


def entry(result: JobResult, result_json: str, facts: AuditFacts | None) -> AuditEntry:
    """The audit record's part beyond the finish: from the result, the bytes it is stored and
    published as (``result_json``), and what was known of the request. ``submitted_at`` (the
    record's timestamp, which its producer chooses) is at most ``completed_at``: a job is
    never submitted after it completed, and a far-future date (year 287168) is no date."""
    error = result.error
    code = error.code if error is not None else None
    decisions: dict[str, Any] = {}
    if result.guardrail_flags:
        decisions["flags"] = list(result.guardrail_flags)
    if code == ErrorCode.CONTENT_BLOCKED and error is not None:
        decisions["blocked"] = error.message
    capture = facts.capture if facts is not None else "digest"
    kept: str | None = None
    if facts is not None and result.output is not None and capture != "digest":
        output = result.output.model_dump(mode="json")
        if capture == "redacted":
            output = redacted(output, Redaction(frozenset(map(PiiKind, facts.pii))))
        kept = canonical(output)
    return AuditEntry(
        submitted_at=_submitted_at(facts, result),
        signed_by=facts.signed_by if facts else None,
        template=result.template,
        template_version=result.template_version,
        region=result.region,
        guardrails=canonical(decisions) if decisions else None,
        error_code=None if code is None else str(code),
        request_sha256=facts.request_sha256 if facts else None,
        result_sha256=hashlib.sha256(result_json.encode()).hexdigest(),
        capture=capture,
        prompt_text=facts.prompt_text if facts else None,
        output_text=kept,
    )
