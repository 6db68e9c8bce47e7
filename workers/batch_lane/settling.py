"""Settling the items of an ended provider batch, each on its own.

Each item is finished like an online call at the batch price (output guardrails included), or
— not done by the provider, or its batch failed — handed back to the online path through the
retry topic (header ``headway-online``). One item never holds up the others: an item whose
answer cannot be read ends ``failed`` with the provider error saying so (read in
:mod:`workers.providers.batch_apis`), and one whose settling breaks on headway's side ends
``failed``/``internal_error`` naming the error's type, its paid call still counted. Items are
marked done as they end, so a look at the submission made again after the ledger or Kafka
failed part-way publishes nothing twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Sequence

from broker.config import DeploymentConfig, HeadwayConfig
from broker.errors import LedgerUnavailable, ProviderInvalidOutput, UncheckableOutput
from schemas.jobs import JobKind
from schemas.results import JobResult, JobStatus
from workers.batch_lane.items import (
    Prepared,
    Saved,
    execution_of,
    identity,
    original_record,
    paid_call,
    saved_headers,
    unsettled,
)
from workers.calls.executor import Executor
from workers.calls.tokens import BilledInput
from workers.guardrails.screening import Screened
from workers.intake.parsing import ValidJob, parse_job
from workers.ledger import batch_lane_rows as rows
from workers.ledger.database.transactions import Transact
from workers.pipeline.access import Rejection
from workers.pipeline.preparation import Preparation
from workers.providers.batch_apis import Outcome
from workers.providers.requests import Execution, ProviderCall
from workers.settle.outcomes import Identity, guarded_result, terminal_result, usage_events
from workers.settle.publisher import Publisher
from workers.settle.settlement import Settlement

log = logging.getLogger(__name__)


class ItemSettler:
    def __init__(
        self,
        config: HeadwayConfig,
        run: Transact,
        settlement: Settlement,
        preparation: Preparation,
        executor: Executor | None = None,  # asks online once more for an invalid JSON answer
    ) -> None:
        self._config = config
        self._run = run
        self._settlement = settlement
        self._preparation = preparation
        self._publisher: Publisher = settlement.publisher
        self._executor = executor

    async def settle(
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
            await self.back_online(online)
        ends = await asyncio.gather(
            *(self._finish(item, o, deployment) for item, o in done), return_exceptions=True
        )
        keys = [(i.tenant, i.job_id) for (i, _), e in zip(done, ends, strict=True) if e is None]
        await self._run(lambda conn: rows.items_done(conn, keys))
        _raise_first(ends)  # the ledger or Kafka: the rest are settled at the next look

    async def _finish(
        self, item: rows.Item, outcome: Outcome, deployment: DeploymentConfig
    ) -> None:
        """Settle one item. An item headway cannot settle ends alone: ``failed`` naming what
        went wrong (its paid call still counted) — or, when not even its identity reads, back
        online. Only the ledger or Kafka being away raises (the item waits for the next look)."""
        try:
            who = identity(json.loads(item.who_json))
        except Exception as error:
            log.error("batch item %s/%s unreadable (%r): online", item.tenant, item.job_id, error)
            await self.back_online([item])
            return
        paid: list[ProviderCall] = []  # the calls made for it, as far as they are known
        async with contextlib.AsyncExitStack() as held:
            try:
                saved = Saved.of(item)
                execution = await execution_of(deployment, outcome, saved.job)
                paid = execution.calls
                executor = self._executor
                if _ask_again(execution.error) and executor is not None:
                    await held.enter_async_context(executor.slots.take())  # in doubt until stored
                    execution = await _asked_again(executor, saved, deployment, execution)
                    paid = execution.calls
                prepared = await self._prepared(item, who, execution)
                period = saved.budget_period
            except LedgerUnavailable:
                raise
            except Exception as error:  # a check that broke on this item alone
                log.exception("batch item %s/%s could not be settled", item.tenant, item.job_id)
                known = paid or [call for call in [paid_call(deployment, outcome)] if call]
                prepared = unsettled(who, error, known)
                period = _period_of(item)
            await self._finished(item, who, prepared, period)

    async def _prepared(self, item: rows.Item, who: Identity, execution: Execution) -> Prepared:
        """The item's result after its output guardrails, and its usage."""
        screened = await self._screened(item)
        result = (
            await guarded_result(who, execution, screened)
            if not isinstance(screened, Rejection)
            else _withheld(who, screened)
        )
        return Prepared(result, execution.calls)

    async def _finished(
        self, item: rows.Item, who: Identity, prepared: Prepared, period: str | None
    ) -> None:
        tags = self._config.usage_tags_of(who.tenant)
        events = usage_events(who, prepared.calls, item.generation, tags)
        await self._settlement.finish(
            prepared.result, events, item.topic, budget_period=period, audit=who.audit
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

    async def back_online(self, items: Sequence[rows.Item]) -> None:
        """Republish the items' original records to the retry topic, due now, marked to run
        online, and let their rows go."""
        keys = [(item.tenant, item.job_id) for item in items]
        await self._run(lambda conn: rows.release_jobs(conn, keys))
        now = time.time()
        delivered = [self._publisher.park(original_record(i), now, 0, 0) for i in items]
        ends = await asyncio.gather(*delivered, return_exceptions=True)
        keys = [key for key, end in zip(keys, ends, strict=True) if end is None]
        await self._run(lambda conn: rows.items_done(conn, keys))
        _raise_first(ends)


def _raise_first(ends: Sequence[BaseException | None]) -> None:
    for end in ends:
        if isinstance(end, BaseException):
            raise end


def _period_of(item: rows.Item) -> str | None:
    try:
        return Saved.of(item).budget_period
    except Exception:  # its stored job no longer reads: its cost counts in today's period
        return None


def _undone(outcome: Outcome) -> bool:
    """The provider did not do it (or may do it if asked again): run it online."""
    return outcome.expired or (outcome.error is not None and outcome.error.retryable)


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


def _ask_again(error: Exception | None) -> bool:
    """A Batch-API answer failing the job's schema is asked for once more online; one the
    schema could not be applied to (its fault, not the answer's) is not."""
    return isinstance(error, ProviderInvalidOutput) and not isinstance(error, UncheckableOutput)
