"""How a job's outcome leaves the worker: stored in the ledger, then published.

A result is stored first (with its usage events, the budget settlement and any cache entry,
in one transaction) and published only after; a job that another finisher stored first gets
that stored result re-published unchanged. While the database is unreachable, the job waits
(:func:`with_ledger`), unlost; while Kafka is, it waits for the publish
(workers/settle/publisher.py).

A result larger than the largest record headway writes (``HEADWAY_MAX_MESSAGE_BYTES``, which
``headway topics create`` gives the results topics) is stored and published as ``failed`` with
``result_too_large`` instead: its usage and cost are kept (the call was made and paid for), it
is never called again, and its partition moves on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from broker.errors import LedgerUnavailable
from broker.topics import Topics, result_headers
from schemas.results import ErrorCode, JobError, JobResult, JobStatus, UsageEvent
from workers.admission.gate import Ticket
from workers.audit.facts import AuditFacts
from workers.ledger.cache_rows import CacheEntry
from workers.ledger.records import AlreadyFinished, FinishOutcome, Key, Stored
from workers.ledger.writer import LedgerWriter
from workers.settle.outcomes import Ending, Identity, finish_record, terminal_result
from workers.settle.publisher import Outgoing, Publisher
from workers.telemetry.metrics import Metrics
from workers.telemetry.tracing import Tracing

log = logging.getLogger(__name__)
T = TypeVar("T")

LEDGER_RETRY_S = (0.1, 5.0)


async def with_ledger(operation: Callable[[], Awaitable[T]]) -> T:
    """Retry a ledger operation while the database is unreachable; the job waits, unlost."""
    wait = LEDGER_RETRY_S[0]
    while True:
        try:
            return await operation()
        except LedgerUnavailable as error:
            log.warning("ledger unavailable, retrying in %.1fs: %s", wait, error)
            await asyncio.sleep(wait)
            wait = min(wait * 2, LEDGER_RETRY_S[1])


def too_large(result: JobResult, size: int, limit: int) -> JobResult:
    """``result`` ended ``failed``/``result_too_large``: same job, usage and cost, no output."""
    message = (
        f"the result is {size:,} bytes and results are limited to {limit:,} bytes "
        "(HEADWAY_MAX_MESSAGE_BYTES, the results topic's max.message.bytes): split the job "
        "into smaller ones (fewer inputs, fewer dimensions, fewer output tokens)"
    )
    error = JobError(code=ErrorCode.RESULT_TOO_LARGE, message=message)
    return result.model_copy(update={"status": JobStatus.FAILED, "output": None, "error": error})


def _utf8_size_above(text: str, limit: int) -> int | None:
    """``text``'s size in UTF-8 when it exceeds ``limit`` bytes, else None (encoding only
    what could: a character takes at most 4 bytes)."""
    if len(text) * 4 <= limit:
        return None
    size = len(text.encode())
    return size if size > limit else None


class Settlement:
    def __init__(
        self,
        ledger: LedgerWriter,
        publisher: Publisher,
        topics: Topics,
        metrics: Metrics,
        tracing: Tracing,
        max_result_bytes: int,
        fallback_topic: Callable[[str], str],
    ) -> None:
        """``fallback_topic(tenant)``: where a result goes when its topic refuses it for good
        (a reply topic that does not exist): the tenant's results topic."""
        self.ledger = ledger
        self.publisher = publisher
        self.topics = topics
        self.metrics = metrics
        self.tracing = tracing
        self.max_result_bytes = max_result_bytes
        self.fallback_topic = fallback_topic

    async def finish(
        self,
        result: JobResult,
        events: list[UsageEvent],
        topic: str,
        ticket: Ticket | None = None,
        cache: CacheEntry | None = None,
        budget_period: str | None = None,
        stored: Callable[[], None] | None = None,
        audit: AuditFacts | None = None,
    ) -> FinishOutcome:
        """Store the result of a claimed job, then publish what is stored. Its cost is settled
        in the budget period of its ticket's hold, or in ``budget_period`` (a job whose hold
        the batch lane kept). ``stored`` is called once the ledger has answered, before
        publishing (the job gives back its provider-call slot there)."""
        result_json = result.model_dump_json()
        size = _utf8_size_above(result_json, self.max_result_bytes)
        if size is not None:
            result = too_large(result, size, self.max_result_bytes)
            result_json = result.model_dump_json()
        payloads = [(event, event.model_dump_json()) for event in events]
        hold = ticket.hold if ticket is not None else None
        # the budget hold is settled, and the cache entry stored, in the transaction that
        # stores the usage events
        period = hold.key if hold is not None else budget_period
        record = finish_record(
            result, result_json, payloads, budget_period=period, cache=cache, audit=audit
        )
        with self.tracing.span("ledger finish"):
            outcome: FinishOutcome = await with_ledger(lambda: self.ledger.finish(record))
        if stored is not None:
            stored()
        if ticket is not None:
            ticket.hold = None
        if isinstance(outcome, Stored):  # counted once, by the finisher that stored it
            self.metrics.job_ended(result, events)
        await self._publish_outcome(outcome, result, result_json, [p for _, p in payloads], topic)
        return outcome

    async def end(
        self,
        who: Identity,
        ending: Ending,
        topic: str,
        *,
        claimed: bool = False,
        ticket: Ticket | None = None,
        store: bool = True,
    ) -> None:
        """End a job without an answer (rejected, cancelled, expired, failed by the poison
        path): its terminal result stored — finished when the job was claimed, settled when
        it never was — then published. ``store=False``: published only, never stored (the
        record was not shown to be the tenant's, or the database refused its values). The one
        way a job ends without an answer, in the pipeline, the poison path and the batch lane."""
        result = terminal_result(who, ending.status, ending.code, ending.message)
        if not store:
            await self.publish_unstored(result, topic)
        elif claimed:
            await self.finish(result, [], topic, ticket, audit=who.audit)
        else:
            await self.settle(result, topic, who.audit)

    async def settle(self, result: JobResult, topic: str, audit: AuditFacts | None = None) -> None:
        """Store and publish the result of a job that never ran (rejected, cancelled, …)."""
        result_json = result.model_dump_json()
        record = finish_record(result, result_json, [], audit=audit)
        outcome: FinishOutcome = await with_ledger(lambda: self.ledger.settle(record))
        if isinstance(outcome, Stored):
            self.metrics.job_ended(result)
        await self._publish_outcome(outcome, result, result_json, [], topic)

    async def publish_unstored(self, result: JobResult, topic: str) -> None:
        """Publish a result the ledger refused to store (the job is in the DLQ)."""
        self.metrics.job_ended(result)
        who = (result.tenant, result.job_id)
        await self._publish(topic, who, result.batch_id, result.model_dump_json(), [])

    async def republish(
        self, stored: AlreadyFinished, topic: str, who: Key, batch_id: str | None
    ) -> None:
        await self._publish(topic, who, batch_id, stored.result_json, stored.usage_payloads)

    async def _publish_outcome(
        self,
        outcome: FinishOutcome,
        result: JobResult,
        result_json: str,
        usage_payloads: list[str],
        topic: str,
    ) -> None:
        who = (result.tenant, result.job_id)
        if isinstance(outcome, Stored):
            await self._publish(topic, who, result.batch_id, result_json, usage_payloads)
        elif isinstance(outcome, AlreadyFinished):
            await self.republish(outcome, topic, who, result.batch_id)
        # HeldElsewhere: the worker holding the job publishes its result

    async def _publish(
        self,
        topic: str,
        who: Key,
        batch_id: str | None,
        result_json: str,
        usage_payloads: list[str],
    ) -> None:
        with self.tracing.span("publish"):
            await self._publish_records(topic, who, batch_id, result_json, usage_payloads)

    async def _publish_records(
        self,
        topic: str,
        who: Key,
        batch_id: str | None,
        result_json: str,
        usage_payloads: list[str],
    ) -> None:
        tenant, job_id = who
        traced = self.tracing.headers()  # the result carries the job's trace context
        fallback = self.fallback_topic(tenant)
        headers = [*traced, *result_headers(tenant, batch_id)]
        records = [Outgoing(topic, job_id.encode(), result_json.encode(), headers, fallback)]
        key = tenant.encode()
        records += [Outgoing(self.topics.usage, key, p.encode(), traced) for p in usage_payloads]
        await self.publisher.publish(records)
