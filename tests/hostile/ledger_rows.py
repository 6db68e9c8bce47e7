"""Finished jobs written straight into a ledger, as a worker would have stored them: what the
hostile specs of ``headway`` reads (results, status, usage, audit) find there."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.results import JobResult, UsageEvent
from workers.audit.facts import AuditFacts
from workers.ledger.database.engine import create_engine
from workers.ledger.database.transactions import transactions_for
from workers.ledger.records import Claim
from workers.ledger.repository import LedgerRepository
from workers.settle.outcomes import event_id, finish_record

T0 = 1_790_000_000.0  # 2026-09-21T12:53:20Z


@dataclass(frozen=True)
class Done:
    """A job that succeeded: whose, of which batch, what it cost, its usage tags, and the
    timestamp of the record it came in (its audit record's ``submitted_at``)."""

    tenant: str
    job_id: str
    batch_id: str | None = None
    cost_usd: float = 0.01
    tags: dict[str, str] = field(default_factory=dict)
    submitted_at: float | None = T0 - 5
    #: ``submitted_at`` stored exactly (as a worker from before the clamp at write did)
    as_is: bool = False


async def store_finished(database_url: str, jobs: list[Done], at: float = T0) -> None:
    engine = create_engine(database_url)
    ledger = transactions_for(engine)
    try:
        repository = LedgerRepository("w1", 60.0, lambda: at)
        claims = [Claim(j.tenant, j.job_id, j.batch_id, "chat", "summarize") for j in jobs]
        await ledger.run(functools.partial(repository.claim_many, claims=claims))
        finishes = []
        for job in jobs:
            completed = datetime.fromtimestamp(at, UTC)
            values: dict[str, Any] = {
                "job_id": job.job_id, "tenant": job.tenant, "batch_id": job.batch_id,
                "route": "summarize", "status": "succeeded", "provider": "p",
                "deployment": "small", "output": {"text": "x", "finish_reason": "stop"},
                "usage": {"input_tokens": 10, "output_tokens": 2}, "cost_usd": job.cost_usd,
                "completed_at": completed.isoformat(),
            }  # fmt: skip
            result = JobResult.model_validate(values)
            event = UsageEvent(
                event_id=event_id(job.tenant, job.job_id, 1, 0), tenant=job.tenant,
                job_id=job.job_id, batch_id=job.batch_id, route="summarize", provider="p",
                deployment="small", input_tokens=10, output_tokens=2, cost_usd=job.cost_usd,
                timestamp=completed, tags=job.tags or None,
            )  # fmt: skip
            facts = AuditFacts(job.submitted_at, None, "0" * 64)
            events = [(event, event.model_dump_json())]
            finish = finish_record(result, result.model_dump_json(), events, audit=facts)
            if job.as_is and finish.audit is not None:
                audit = dataclasses.replace(finish.audit, submitted_at=job.submitted_at)
                finish = dataclasses.replace(finish, audit=audit)
            finishes.append(finish)
        await ledger.run(functools.partial(repository.finish_many, finishes=finishes))
    finally:
        await ledger.close()
        await engine.dispose()
