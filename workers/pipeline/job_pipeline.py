"""One job from record to published result: intake → checks → ledger claim → provider → ledger
finish → results and usage out. Every path ends in a published outcome (or a deliberate
hand-over to the worker that holds the job), and only then is the record's offset done.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field

from aiokafka import ConsumerRecord

from broker.config import DeploymentConfig, HeadwayConfig, RouteConfig
from broker.headers import has_header
from broker.topics import HEADER_ONLINE, HEADER_REPLAY, Topics
from schemas.jobs import JobKind, JobRequest
from schemas.results import ErrorCode
from workers.admission.budgets import OverBudget
from workers.admission.gate import Ticket
from workers.admission.quotas import Wait
from workers.batch_lane.eligibility import batch_deployment
from workers.batch_lane.items import Handed
from workers.calls.routing import CostLimited
from workers.calls.slots import CallSlot, CallSlots
from workers.calls.tokens import BilledInput
from workers.content.features import NOTHING, Needs, Unsupported
from workers.guardrails.screening import Screened
from workers.intake.fetching import lane_of
from workers.intake.parsing import Intake, InvalidJob, Unreadable, ValidJob, parse_job
from workers.ledger.batch_lane_rows import BATCH_OWNER
from workers.ledger.cache_rows import CacheEntry
from workers.ledger.records import AlreadyFinished, Claim, ClaimOutcome, HeldElsewhere, Stored
from workers.ledger.writer import LedgerWriter
from workers.pipeline.access import Rejection
from workers.pipeline.parking import Parked
from workers.pipeline.parts import Calls, Checks, Endings, Telemetry
from workers.pipeline.response_cache import Request, normalise, served_from
from workers.providers.base import WireMessages
from workers.providers.requests import Execution
from workers.settle.outcomes import (
    CANCELLED,
    EXPIRED_BEFORE_START,
    EXPIRED_DURING_CALL,
    Ending,
    Identity,
    guarded_result,
    now_utc,
    result_topic,
    usage_events,
)
from workers.settle.settlement import with_ledger

log = logging.getLogger(__name__)

HELD_POLL_S = (0.05, 2.0)  # first and longest wait while another worker holds the job


@dataclass(slots=True)
class JobRun:
    """A valid, admitted-or-served job on its way through claim, call and finish."""

    job: JobRequest
    who: Identity
    route: RouteConfig
    messages: WireMessages | None
    topic: str
    record: ConsumerRecord[bytes, bytes]
    request: Request | None = None  # its response-cache request (None: not cacheable)
    hit: Execution | None = None  # answered from the cache
    ticket: Ticket | None = None  # its admission (quotas, budget hold)
    screened: Screened | None = None  # its guardrails, for the output check
    need: Needs = NOTHING  # what a deployment must take beyond text
    replay: bool | None = None  # its replay header is genuine (None: not checked yet)
    billed: BilledInput = field(init=False)  # its billed input, estimated once when needed

    def __post_init__(self) -> None:
        self.billed = BilledInput(self.job, self.messages)


class JobPipeline:
    """One job's path; every collaborator comes built, in groups (:mod:`.parts`)."""

    def __init__(
        self,
        config: HeadwayConfig,
        topics: Topics,
        ledger: LedgerWriter,
        checks: Checks,
        calls: Calls,
        endings: Endings,
        telemetry: Telemetry,
        max_message_bytes: int,
    ) -> None:
        self.config = config
        self.topics = topics
        self._lanes = topics.job_lanes
        self.ledger = ledger
        self.checks = checks
        self.calls = calls
        self.endings = endings
        self.metrics = telemetry.metrics
        self.tracing = telemetry.tracing
        self.max_message_bytes = max_message_bytes
        # the parts a worker reaches for by name
        self.preparation = checks.preparation
        self.cancellations = checks.cancellations
        self.replays = checks.replays
        self.cache = checks.cache
        self.admission = checks.admission
        self.auditor = checks.auditor
        self.executor = calls.executor
        self.settlement = endings.settlement
        self.parking = endings.parking
        self.poison = endings.poison
        self.batch_lane = endings.batch_lane

    async def handle(
        self,
        record: ConsumerRecord[bytes, bytes],
        intake: Intake | None = None,
        replay: bool | None = None,
    ) -> Wait | None:
        """Run one record's job to its published outcome (``intake``: already parsed;
        ``replay``: whether its replay header was found genuine — the worker checks before a
        runner takes the job; None: checked here), or say how long its tenant must wait for
        admission (the job has not started)."""
        if intake is None:
            intake = parse_job(record.value, self.max_message_bytes)
        if isinstance(intake, Unreadable):
            await self.poison.unreadable(record, intake)
        elif isinstance(intake, InvalidJob):
            await self.poison.invalid(record, intake)
        elif isinstance(intake, ValidJob):
            return await self._run(intake.job, record, replay)
        return None

    # -- a valid job --------------------------------------------------------------------------

    async def _run(
        self, job: JobRequest, record: ConsumerRecord[bytes, bytes], replay: bool | None
    ) -> Wait | None:
        self.tracing.describe(job)
        tenant = self.config.tenant(job.tenant)
        value, headers = record.value or b"", record.headers
        who = Identity.of(job, self.auditor.facts(job, tenant, value, record.timestamp))
        prepared = await with_ledger(lambda: self.preparation.prepare(job, tenant, value, headers))
        if isinstance(prepared, Rejection):
            ending = Ending.rejected(prepared.code, prepared.message)
            if prepared.unauthenticated:  # nothing stored under, or sent for, the tenant
                topic = self.poison.tenant_topic(tenant)
                await self.settlement.end(who, ending, topic, store=False)
            else:
                await self.settlement.end(who, ending, result_topic(job, tenant, self.topics))
            return None
        # the job is the tenant's own from here: its reply_topic may be honoured
        topic = result_topic(job, tenant, self.topics)
        if prepared.template is not None:
            who = dataclasses.replace(
                who, template=prepared.template, template_version=prepared.template_version
            )
        job, route, messages = prepared.job, prepared.route, prepared.messages
        if self.cancellations.is_cancelled(job.tenant, job.job_id, job.batch_id):
            await self.settlement.end(who, CANCELLED, topic)
            return None
        run = JobRun(job, who, route, messages, topic, record, normalise(job, route, messages))
        run.replay = replay
        run.screened, run.need = prepared.screened, prepared.need
        if run.request is not None:
            request = run.request
            run.hit = await with_ledger(lambda: self.cache.lookup(request, route, run.need))
            self.metrics.cache_lookup(job.route, "miss" if run.hit is None else "hit")
        if run.hit is None and tenant is not None and self.admission.limits(job, tenant):
            with self.tracing.span("quota_wait"):
                admitted = await with_ledger(
                    lambda: self.admission.admit(job, tenant, route, run.billed)
                )
            if isinstance(admitted, Wait):
                return admitted
            if isinstance(admitted, OverBudget):
                if admitted.park:
                    return Wait(admitted.retry_s, "budget", park=True)
                ending = Ending.rejected(admitted.code, admitted.message)
                await self.settlement.end(who, ending, topic)
                return None
            run.ticket = admitted
        used: int | None = None
        try:
            used = await self._claim_and_execute(run)
        finally:
            if run.ticket is not None:
                await self.admission.release(run.ticket, used, started=True)
        return None

    async def _claim_and_execute(self, run: JobRun) -> int | None:
        """Claim, run, finish; returns the tokens the provider reported (None: no call)."""
        key = (run.job.tenant, run.job.job_id)
        await self.checks.claimants.enter(key)
        try:
            return await self._claim_and_execute_alone(run)
        finally:
            self.checks.claimants.leave(key)

    async def _claim_and_execute_alone(self, run: JobRun) -> int | None:
        job = run.job
        replayed = run.replay
        if replayed is None:  # not checked before (a caller without the worker's holds)
            replayed = has_header(run.record.headers, HEADER_REPLAY) and (
                self.replays is not None and await self.replays.genuine(run.record)
            )
        claim = Claim(job.tenant, job.job_id, job.batch_id, job.kind.value, job.route, replayed)
        batcher = self.executor.micro_batcher if job.kind is JobKind.EMBEDDING else None
        if batcher is not None:
            batcher.expect(job.route)  # a partial micro-batch of the route may wait for it
        try:
            with self.tracing.span("ledger claim"):
                outcome = await self._claim(claim)
        finally:
            if batcher is not None:
                batcher.arrived(job.route)
        if isinstance(outcome, AlreadyFinished):
            key = (job.tenant, job.job_id)
            await self.settlement.republish(outcome, run.topic, key, job.batch_id)
            return None
        if isinstance(outcome, HeldElsewhere):  # in the batch lane: it publishes the result
            return None
        try:
            return await self._execute(run, outcome.generation, Parked.of(run.record))
        except Exception:  # a bug: let the claim go, so a retry (or a redelivery) may run it
            await with_ledger(lambda: self.ledger.release((job.tenant, job.job_id)))
            raise

    async def _claim(self, claim: Claim) -> ClaimOutcome:
        """Claim the job; while another live worker holds it, wait for it to finish (held
        by the batch lane: the lane finishes it, nothing to wait for)."""
        wait = HELD_POLL_S[0]
        while True:
            outcome: ClaimOutcome = await with_ledger(lambda: self.ledger.claim(claim))
            if not isinstance(outcome, HeldElsewhere) or outcome.owner == BATCH_OWNER:
                return outcome
            await asyncio.sleep(wait)
            wait = min(wait * 2, HELD_POLL_S[1])

    async def _execute(self, run: JobRun, generation: int, parked: Parked) -> int | None:
        job, who, topic, ticket = run.job, run.who, run.topic, run.ticket
        deadline = _monotonic_deadline(job)
        if deadline is not None and deadline <= time.monotonic():
            await self.settlement.end(who, EXPIRED_BEFORE_START, topic, claimed=True, ticket=ticket)
            return None
        if run.hit is None and (batched := self._batch_deployment(run)) is not None:
            await self._hand_over(run, batched, generation)
            return None
        # from just before the first call until the result is stored the job is in doubt:
        # it holds one of the worker's `concurrency` slots (workers/calls/slots.py)
        async with self.executor.slots.take() if run.hit is None else CallSlots.none() as slot:
            return await self._answer(run, generation, parked, deadline, slot)

    async def _answer(
        self, run: JobRun, generation: int, parked: Parked, deadline: float | None, slot: CallSlot
    ) -> int | None:
        """Call (or serve from the cache), then finish; the slot is given back once stored."""
        job, who, topic, ticket = run.job, run.who, run.topic, run.ticket
        entry: CacheEntry | None = None
        if run.hit is not None:
            execution = run.hit
        else:
            with self.tracing.span("route"):
                plan = self.calls.router.plan(run.route, job, run.billed, run.need)
            if not isinstance(plan, list):
                code = (
                    ErrorCode.COST_LIMIT_EXCEEDED
                    if isinstance(plan, CostLimited)
                    else ErrorCode.UNSUPPORTED_FEATURE
                )
                ending = Ending.rejected(code, plan.message)
                await self.settlement.end(who, ending, topic, claimed=True, ticket=ticket)
                return None
            try:
                async with _timeout_at(deadline):
                    with self.tracing.span("provider"):
                        execution, entry = await self._provider(run, plan, deadline)
            except TimeoutError:
                expired = EXPIRED_DURING_CALL
                await self.settlement.end(who, expired, topic, claimed=True, ticket=ticket)
                return None
            if execution.park_s is not None and parked.parks < self.calls.retry.max_parks:
                await self.parking.park(job, parked, execution)
                return None
        execution.attempts += parked.attempts
        result = await guarded_result(who, execution, run.screened)
        events = usage_events(
            who, execution.calls, generation, self.config.usage_tags_of(who.tenant)
        )
        outcome = await self.settlement.finish(
            result, events, topic, ticket, entry, stored=slot.release, audit=who.audit
        )
        if entry is not None and isinstance(outcome, Stored):
            self.cache.remember(entry)
        if result.cached:
            return None  # no provider tokens used
        return sum(e.input_tokens + e.output_tokens for e in events) if events else None

    def _batch_deployment(self, run: JobRun) -> DeploymentConfig | None:
        """The batch deployment to hand the job to, or None: it runs online."""
        if self.batch_lane is None:
            return None
        if has_header(run.record.headers, HEADER_ONLINE):
            return None  # the lane gave it back
        lane = lane_of(run.record, self._lanes, self.topics.retry)
        able = self.calls.router.able(run.route, run.job, run.need)
        if isinstance(able, Unsupported):
            return None
        return batch_deployment(run.job, run.route, lane, now_utc(), deployments=able)

    async def _hand_over(self, run: JobRun, deployment: DeploymentConfig, generation: int) -> None:
        lane = self.batch_lane
        assert lane is not None
        ticket = run.ticket
        period = ticket.hold.key if ticket is not None and ticket.hold is not None else None
        handed = Handed(
            run.job, run.who, deployment, run.messages, run.topic, run.record, generation, period
        )
        await with_ledger(lambda: lane.hand_over(handed))
        if ticket is not None:
            ticket.hold = None  # the lane holds it now, until the job's cost is settled
        self.metrics.batch_handed_over(run.job.route)

    async def _provider(
        self, run: JobRun, plan: list[DeploymentConfig], deadline: float | None
    ) -> tuple[Execution, CacheEntry | None]:
        """Call down the plan — or, when an identical cacheable request of this worker is in
        flight, wait for its answer and be served it (calling for itself if it got none)."""
        request = run.request
        if request is None:
            return await self._call(run, plan, deadline), None
        regions = run.need.regions
        leader = self.cache.join(request, regions)
        if leader is not None:
            answer = await asyncio.shield(leader)  # shared with the other followers
            served = None if answer is None else served_from(answer, run.route, regions)
            if served is not None:
                self.metrics.cache_lookup(run.job.route, "coalesced")
                return served, None
            return await self._call(run, plan, deadline), None
        entry: CacheEntry | None = None
        try:
            execution = await self._call(run, plan, deadline)
            entry = self.cache.entry(request, run.route, execution)
            return execution, entry
        finally:
            self.cache.land(request, regions, entry)

    async def _call(
        self, run: JobRun, plan: list[DeploymentConfig], deadline: float | None
    ) -> Execution:
        return await self.executor.execute(
            run.job,
            plan,
            run.messages,
            run.billed,
            deadline,
            park_after_s=self.calls.retry.park_after_s,
            failover_on=run.route.failover_on,
        )


def _monotonic_deadline(job: JobRequest) -> float | None:
    if job.deadline is None:
        return None
    return time.monotonic() + (job.deadline.timestamp() - time.time())


def _timeout_at(deadline: float | None) -> contextlib.AbstractAsyncContextManager[object]:
    """A timeout at ``deadline`` (monotonic), or none at all without one (a job without a
    deadline skips asyncio's Timeout and its timer handle: ~8 µs a job)."""
    if deadline is None:
        return _NO_TIMEOUT
    # asyncio's loop clock is time.monotonic() on every supported platform
    return asyncio.timeout_at(asyncio.get_running_loop().time() + (deadline - time.monotonic()))


_NO_TIMEOUT = contextlib.nullcontext()
