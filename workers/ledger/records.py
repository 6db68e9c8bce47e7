"""What the ledger is asked and what it answers: claims, finishes and their outcomes.

A claim is answered :class:`Claimed` (this worker holds the job now), :class:`AlreadyFinished`
(its stored result, to publish again) or :class:`HeldElsewhere` (another holder, and until
when); a finish :class:`Stored`, or the same two answers when another finisher came first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from workers.ledger.cache_rows import CacheEntry
from workers.ledger.database.models import RowStatus

Key = tuple[str, str]  # (tenant, job_id)


@dataclass(frozen=True, slots=True)
class Claim:
    tenant: str
    job_id: str
    batch_id: str | None
    kind: str | None
    route: str | None
    reopen: bool = False  # a replay from the DLQ: a failed or rejected job may run again

    @property
    def key(self) -> Key:
        return (self.tenant, self.job_id)


@dataclass(frozen=True, slots=True)
class Claimed:
    """This worker holds the job now; ``generation`` counts claims (1 for the first)."""

    generation: int


@dataclass(frozen=True, slots=True)
class AlreadyFinished:
    result_json: str
    usage_payloads: list[str]


@dataclass(frozen=True, slots=True)
class HeldElsewhere:
    owner: str | None
    expires_at: float


ClaimOutcome = Claimed | AlreadyFinished | HeldElsewhere


@dataclass(frozen=True, slots=True)
class UsageRecord:
    event_id: str
    route: str
    provider: str
    deployment: str
    input_tokens: int
    output_tokens: int
    cost_nusd: int
    cached: bool
    timestamp: float
    payload: str
    tags: str | None = None  # canonical JSON of the event's usage tags


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What a job's audit record adds to its finish (workers/audit/): who signed it, what ran
    where, the guardrails' decisions, digests of the request and result records' bytes, and
    captures by the tenant's policy."""

    submitted_at: float | None  # the job record's timestamp
    signed_by: str | None  # the tenant's signing key that signed it (env name#fingerprint)
    template: str | None
    template_version: int | None
    region: str | None
    guardrails: str | None  # JSON: what the guardrails noticed, and a block's reason
    error_code: str | None
    request_sha256: str | None
    result_sha256: str | None
    capture: str  # digest | redacted | full
    prompt_text: str | None = None  # captured (redacted or full), kept apart
    output_text: str | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    """A terminal result to store for (tenant, job_id)."""

    tenant: str
    job_id: str
    status: RowStatus
    result_json: str
    completed_at: float
    batch_id: str | None = None
    kind: str | None = None
    route: str | None = None
    provider: str | None = None
    deployment: str | None = None
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nusd: int = 0
    usage: Sequence[UsageRecord] = field(default_factory=tuple)
    budget_period: str | None = None  # the job holds budget reservations: Hold.key
    cache: CacheEntry | None = None  # the provider's answer, kept for identical requests
    audit: AuditEntry | None = None  # its audit record, written when the result is stored

    @property
    def key(self) -> Key:
        return (self.tenant, self.job_id)


@dataclass(frozen=True, slots=True)
class Stored:
    pass


FinishOutcome = Stored | AlreadyFinished | HeldElsewhere
