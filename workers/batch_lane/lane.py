"""The provider Batch-API lane in a worker: hand jobs over, pack them, poll, finish or fall back.

See docs/batch-lane.md. Every worker with a ``batch = true`` deployment runs the pack and poll
loops; the ledger's leases make sure a pending item is packed by one worker and a submission
polled by one at a time.

- :meth:`BatchLane.hand_over` (from the pipeline, after the claim and admission): the job's
  request line is stored, its row and budget hold pass to the lane; the record's offset may
  then be committed — the database owns the job.
- :meth:`BatchLane.pack_once`: per deployment, pending items up to the provider's limits
  (requests and bytes) or ``max_items``, submitted as one provider batch once it is full or
  its oldest item has waited ``wait_s``; and items whose deadline came near while they
  waited go back online.
- :meth:`BatchLane.poll_once`: one submission that is due a look; when ended, each item is
  finished like an online call at the batch price (output guardrails included), or —
  expired, cancelled, a retryable error, or its batch failed — handed back to the online path
  through the retry topic (header ``headway-online``), in time for its deadline.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Sequence

from broker.config import DeploymentConfig, HeadwayConfig
from broker.errors import ProviderInvalidOutput
from broker.settings import BatchLaneSettings
from schemas.jobs import JobKind
from schemas.results import JobResult, JobStatus
from workers.batch_lane.items import (
    Handed,
    Saved,
    call_of,
    execution_of,
    identity,
    new_item,
    original_record,
    saved_headers,
)
from workers.calls.executor import Executor
from workers.calls.tokens import BilledInput
from workers.guardrails.screening import Screened
from workers.intake.parsing import ValidJob, parse_job
from workers.ledger import batch_lane_rows as rows
from workers.ledger.database.transactions import Transact
from workers.pipeline.access import Rejection
from workers.pipeline.cancellations import Cancellations
from workers.pipeline.preparation import Preparation
from workers.providers.batch_apis import BatchAPI, Outcome
from workers.providers.requests import Execution
from workers.settle.outcomes import (
    CANCELLED,
    Identity,
    guarded_result,
    terminal_result,
    usage_events,
)
from workers.settle.publisher import Publisher
from workers.settle.settlement import Settlement

log = logging.getLogger(__name__)

PACK_LEASE_S = 300.0  # a packing worker's hold on the items it is submitting
POLL_LEASE_S = 300.0  # a polling worker's hold on a submission while it settles the items
HOLD_S = 26 * 3600.0  # how long the lane holds a job without a deadline before it lapses
SETTLE_CHUNK = 1000  # items of an ended batch settled at once (the ledger batches them)


class BatchLane:
    def __init__(
        self,
        config: HeadwayConfig,
        apis: dict[str, BatchAPI],
        run: Transact,
        settlement: Settlement,
        preparation: Preparation,
        owner: str,
        settings: BatchLaneSettings,
        cancellations: Cancellations,
        executor: Executor | None = None,  # asks online once more for an invalid JSON answer
    ) -> None:
        self._config = config
        self._apis = apis
        self._run = run
        self._settlement = settlement
        self._preparation = preparation
        self._publisher: Publisher = settlement.publisher
        self._owner = owner
        self.settings = settings
        self._cancellations = cancellations
        self._executor = executor
        self._deployments = {
            d.key: d for route in config.routes.values() for d in route.deployments if d.batch
        }
        self.handed_over = 0
        self.submissions = 0

    # -- hand-over ----------------------------------------------------------------------------

    async def hand_over(self, handed: Handed) -> None:
        api = self._apis[handed.deployment.provider]
        item = new_item(handed, api)
        now = time.time()
        hold_until = item.deadline if item.deadline is not None else now + HOLD_S
        await self._run(lambda conn: rows.enqueue(conn, item, hold_until, now))
        self.handed_over += 1

    # -- packing ------------------------------------------------------------------------------

    async def pack_once(self) -> int:
        """Send overdue items back online, submit what is pending; returns submissions made."""
        await self._sweep_overdue()
        made = 0
        now = time.time()
        found: list[rows.Waiting] = await self._run(lambda conn: rows.waiting(conn, now))
        for waiting in found:
            deployment = self._deployments.get(waiting.deployment_key)
            if deployment is None:
                continue  # a deployment no longer batched here: another config's worker packs it
            # full batches go now; a part-filled one once its oldest item waited long enough
            limit = self._limit(deployment)
            batches = -(-waiting.items // limit)
            if now - waiting.oldest < self.settings.wait_s:
                batches = waiting.items // limit
            for _ in range(batches):
                if not await self._pack(deployment):
                    break
                made += 1
        return made

    def _limit(self, deployment: DeploymentConfig) -> int:
        most = self._apis[deployment.provider].limits.max_requests
        return min(most, self.settings.max_items or most)

    async def _pack(self, deployment: DeploymentConfig) -> bool:
        api = self._apis[deployment.provider]
        limit = self._limit(deployment)
        now = time.time()
        items: list[rows.Item] = await self._run(
            lambda conn: rows.take_pending(
                conn, deployment.key, limit, self._owner, PACK_LEASE_S, now
            )
        )
        items = await self._drop_cancelled(items)
        if not items:
            return False
        chosen = _within_bytes(items, api.limits.max_bytes)
        rest = items[len(chosen) :]
        if rest:
            await self._run(lambda conn: rows.release_packing(conn, rest, self._owner))
        try:
            batch_id = await api.submit(
                [item.line.encode() for item in chosen], embeddings=chosen[0].kind == "embedding"
            )
        except Exception as error:
            log.warning("batch submission to %s failed: %s", deployment.key, error)
            await self._run(lambda conn: rows.release_packing(conn, chosen, self._owner))
            return False
        # a crash right here leaves the provider batch unrecorded: its items are packed again
        # when the packing lease lapses (the first batch's results are never read)
        await self._run(
            lambda conn: rows.submitted(
                conn, batch_id, deployment.key, chosen, self._owner, time.time()
            )
        )
        self.submissions += 1
        log.info("submitted %d jobs to %s as batch %s", len(chosen), deployment.key, batch_id)
        return True

    async def _drop_cancelled(self, items: list[rows.Item]) -> list[rows.Item]:
        """Items cancelled while they waited end ``cancelled`` here (not yet sent: nothing
        paid); the rest are returned."""
        cancelled: list[rows.Item] = []
        rest: list[rows.Item] = []
        for item in items:
            (cancelled if self._is_cancelled(item) else rest).append(item)
        for item in cancelled:
            who = identity(json.loads(item.who_json))
            await self._settlement.end(who, CANCELLED, item.topic, claimed=True)
        if cancelled:
            keys = [(item.tenant, item.job_id) for item in cancelled]
            await self._run(lambda conn: rows.items_done(conn, keys))
        return rest

    def _is_cancelled(self, item: rows.Item) -> bool:
        batch_id = json.loads(item.who_json).get("batch_id")
        return self._cancellations.is_cancelled(item.tenant, item.job_id, batch_id)

    async def _sweep_overdue(self) -> None:
        before = time.time() + self.settings.margin_s
        while True:
            items: list[rows.Item] = await self._run(
                lambda conn: rows.take_overdue(conn, before, SETTLE_CHUNK)
            )
            if not items:
                return
            log.info("%d batch-lane jobs near their deadline go back online", len(items))
            await self._back_online(items)

    # -- polling ------------------------------------------------------------------------------

    async def poll_once(self) -> bool:
        """Look at one submission that is due a look; True when one was looked at."""
        due: tuple[str, str] | None = await self._run(
            lambda conn: rows.take_due_batch(conn, self._owner, POLL_LEASE_S, time.time())
        )
        if due is None:
            return False
        batch_id, key = due
        deployment = self._deployments.get(key)
        if deployment is None:
            return True  # not batched in this worker's config: its lease lapses to another
        api = self._apis[deployment.provider]
        state = await api.state(batch_id)
        if not state.ended:
            next_look = time.time() + self.settings.poll_every_s
            await self._run(lambda conn: rows.look_again(conn, batch_id, self._owner, next_look))
            return True
        items: list[rows.Item] = await self._run(lambda conn: rows.items_of(conn, batch_id))
        outcomes: dict[str, Outcome] = {}
        if not state.failed:
            calls = {item.custom_id: call_of(item, deployment) for item in items}
            outcomes = {o.custom_id: o for o in await api.results(batch_id, calls)}
        for start in range(0, len(items), SETTLE_CHUNK):
            await self._settle(
                [
                    (item, outcomes.get(item.custom_id))
                    for item in items[start : start + SETTLE_CHUNK]
                ],
                deployment,
            )
        await self._run(lambda conn: rows.batch_ended(conn, batch_id, time.time()))
        log.info("batch %s of %s ended: %d jobs", batch_id, key, len(items))
        return True

    async def _settle(
        self, settled: list[tuple[rows.Item, Outcome | None]], deployment: DeploymentConfig
    ) -> None:
        online: list[rows.Item] = []
        done: list[tuple[rows.Item, Outcome]] = []
        for item, outcome in settled:
            if outcome is None or _undone(outcome):  # None: no line for it (its batch failed)
                online.append(item)
            else:
                done.append((item, outcome))
        if online:
            await self._back_online(online)
        await asyncio.gather(*(self._finish(item, o, deployment) for item, o in done))
        keys = [(item.tenant, item.job_id) for item, _ in done]
        await self._run(lambda conn: rows.items_done(conn, keys))

    async def _finish(
        self, item: rows.Item, outcome: Outcome, deployment: DeploymentConfig
    ) -> None:
        who = identity(json.loads(item.who_json))
        saved = Saved.of(item)
        execution = await execution_of(deployment, outcome, saved.job)
        executor = self._executor
        if isinstance(execution.error, ProviderInvalidOutput) and executor is not None:
            async with executor.slots.take():  # in doubt until its result is stored
                execution = await _asked_again(executor, saved, deployment, execution)
                await self._settled(item, who, execution, saved.budget_period)
            return
        await self._settled(item, who, execution, saved.budget_period)

    async def _settled(
        self, item: rows.Item, who: Identity, execution: Execution, period: str | None
    ) -> None:
        screened = await self._screened(item)
        result = (
            await guarded_result(who, execution, screened)
            if not isinstance(screened, Rejection)
            else _withheld(who, screened)
        )
        tags = self._config.usage_tags_of(who.tenant)
        events = usage_events(who, execution.calls, item.generation, tags)
        await self._settlement.finish(
            result, events, item.topic, budget_period=period, audit=who.audit
        )

    async def _screened(self, item: rows.Item) -> Screened | Rejection | None:
        """The job's guardrails for the output check, prepared again from its record (PII
        placeholders are stable, so the same ones are restored)."""
        if item.kind != JobKind.CHAT.value:
            return None
        value = base64.b64decode(item.record_value)
        intake = parse_job(value, len(value) + 1)
        if not isinstance(intake, ValidJob):
            return None
        route = self._config.routes.get(intake.job.route)
        if route is None or not self._preparation.guardrails.applies(item.tenant, route):
            return None
        tenant = self._config.tenant(item.tenant)
        prepared = await self._preparation.prepare(
            intake.job, tenant, value, saved_headers(item.record_headers)
        )
        return prepared if isinstance(prepared, Rejection) else prepared.screened

    async def _back_online(self, items: Sequence[rows.Item]) -> None:
        """Republish the items' original records to the retry topic, due now, marked to run
        online, and let their rows go."""
        keys = [(item.tenant, item.job_id) for item in items]
        await self._run(lambda conn: rows.release_jobs(conn, keys))
        now = time.time()
        delivered = [self._publisher.park(original_record(i), now, 0, 0) for i in items]
        await asyncio.gather(*delivered)
        await self._run(lambda conn: rows.items_done(conn, keys))

    async def run_forever(self) -> None:
        async def packing() -> None:
            while True:
                await asyncio.sleep(self.settings.pack_every_s)
                try:
                    await self.pack_once()
                except Exception as error:
                    log.warning("batch packing failed: %s", error)

        async def polling() -> None:
            while True:
                await asyncio.sleep(self.settings.poll_every_s)
                try:
                    while await self.poll_once():
                        pass
                except Exception as error:
                    log.warning("batch polling failed: %s", error)

        await asyncio.gather(packing(), polling())


def _undone(outcome: Outcome) -> bool:
    """The provider did not do it (or may do it if asked again): run it online."""
    return outcome.expired or (outcome.error is not None and outcome.error.retryable)


def _within_bytes(items: list[rows.Item], max_bytes: int) -> list[rows.Item]:
    chosen: list[rows.Item] = []
    size = 0
    for item in items:
        size += len(item.line.encode()) + 1
        if size > max_bytes and chosen:
            break
        chosen.append(item)
    return chosen


def _withheld(who: Identity, rejection: Rejection) -> JobResult:
    """The job's checks refuse it now (its config changed while it waited): no output."""
    return terminal_result(who, JobStatus.REJECTED, rejection.code, rejection.message)


async def _asked_again(
    executor: Executor, saved: Saved, deployment: DeploymentConfig, first: Execution
) -> Execution:
    """A Batch-API answer failing the job's JSON schema is asked for once more, online, on the
    same deployment (its limits and health apply); both calls are paid."""
    billed = BilledInput(saved.job, saved.messages)
    again = await executor.execute(saved.job, [deployment], saved.messages, billed, reasks=0)
    again.calls[:0] = first.calls
    again.attempts += first.attempts
    return again
