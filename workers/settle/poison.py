"""The poison path: records that cannot run, dead-lettered with their reason and answered.

- an invalid job (a JSON object that fails validation): dead letter, and a ``rejected``
  result when its ``job_id`` and tenant can be read;
- a job headway's own code kept failing on, or whose values the database refused: dead
  letter, and a ``failed`` result.

A result is stored under the tenant it names only when the record may act as that tenant
(:meth:`~workers.pipeline.access.AccessControl.authenticate`: a known tenant, signed by it when it
signs). Otherwise it is published unstored to the tenant's own results topic: a producer
without the tenant's secret can neither squat a job id nor have output sent anywhere.
"""

from __future__ import annotations

import dataclasses

from aiokafka import ConsumerRecord

from broker.config import HeadwayConfig, TenantConfig
from broker.errors import LedgerRefused
from broker.topics import Topics
from schemas.results import ErrorCode, JobStatus
from workers.audit.facts import AuditFacts
from workers.intake.parsing import Intake, InvalidJob, Unreadable, ValidJob
from workers.pipeline.access import AccessControl, Rejection
from workers.settle.outcomes import Ending, Identity, result_topic
from workers.settle.publisher import Publisher
from workers.settle.settlement import Settlement


class PoisonPath:
    def __init__(
        self,
        config: HeadwayConfig,
        topics: Topics,
        publisher: Publisher,
        settlement: Settlement,
        access: AccessControl,
    ) -> None:
        self.config = config
        self.topics = topics
        self.publisher = publisher
        self.settlement = settlement
        self.access = access

    async def poisoned(
        self,
        record: ConsumerRecord[bytes, bytes],
        intake: Intake | None,
        reason: str,
        code: ErrorCode = ErrorCode.INTERNAL_ERROR,
    ) -> None:
        """headway's own code kept failing on this job (or the database refused one of its
        values): dead-letter it and, when it can be named, end it ``failed`` with ``code``
        (``headway dlq replay`` re-runs it after a fix). A result the database refuses too
        is published without being stored."""
        # the dead letter lands before the result is stored: a job stored as finished is
        # never dead-lettered again when it is redelivered
        await self.publisher.dead_letter(record, reason)
        who: Identity | None = None
        tenant: TenantConfig | None = None
        if isinstance(intake, ValidJob):
            who, tenant = Identity.of(intake.job), self.config.tenant(intake.job.tenant)
        elif isinstance(intake, InvalidJob) and intake.job_id and intake.tenant:
            who = Identity.from_raw(intake.job_id, intake.tenant, intake.raw)
            tenant = self.config.tenant(intake.tenant)
        if who is not None:
            who = dataclasses.replace(
                who, audit=AuditFacts.of_record(record.value, record.timestamp)
            )
            message = f"headway could not process this job ({reason[:300]}); it is in the DLQ"
            ending = Ending(JobStatus.FAILED, code, message)
            if self._refusal(record, who.tenant, tenant) is not None:
                await self.settlement.end(who, ending, self.tenant_topic(tenant), store=False)
                return
            job = intake.job if isinstance(intake, ValidJob) else None
            await self._end(who, ending, result_topic(job, tenant, self.topics))

    async def unreadable(self, record: ConsumerRecord[bytes, bytes], intake: Unreadable) -> None:
        """Not a job at all (not JSON, too large): dead-lettered; there is no one to answer."""
        await self.publisher.dead_letter(record, intake.reason)

    async def invalid(self, record: ConsumerRecord[bytes, bytes], intake: InvalidJob) -> None:
        await self.publisher.dead_letter(record, f"invalid_request: {intake.reason}")
        if intake.job_id is not None and intake.tenant is not None:
            who = Identity.from_raw(intake.job_id, intake.tenant, intake.raw)
            who = dataclasses.replace(
                who, audit=AuditFacts.of_record(record.value, record.timestamp)
            )
            tenant = self.config.tenant(intake.tenant)
            topic = self.tenant_topic(tenant)
            refused = self._refusal(record, intake.tenant, tenant)
            if refused is not None:  # said first, as for a valid job; never stored
                ending = Ending.rejected(refused.code, refused.message)
                await self.settlement.end(who, ending, topic, store=False)
                return
            ending = Ending.rejected(ErrorCode.INVALID_REQUEST, intake.reason)
            await self._end(who, ending, topic)

    async def _end(self, who: Identity, ending: Ending, topic: str) -> None:
        """End the job, stored; one the database refuses too is published unstored."""
        try:
            await self.settlement.end(who, ending, topic)
        except LedgerRefused:
            await self.settlement.end(who, ending, topic, store=False)

    def _refusal(
        self, record: ConsumerRecord[bytes, bytes], name: str, tenant: TenantConfig | None
    ) -> Rejection | None:
        """Why the record may not act as tenant ``name`` (None: what it asks may be stored
        under the tenant)."""
        return self.access.authenticate(name, tenant, record.value or b"", record.headers)

    def tenant_topic(self, tenant: TenantConfig | None) -> str:
        """The tenant's own results topic (never a reply topic the record asks for)."""
        return result_topic(None, tenant, self.topics)


def _audited(record: ConsumerRecord[bytes, bytes]) -> AuditFacts:
    return AuditFacts.of_record(record.value, record.timestamp)
