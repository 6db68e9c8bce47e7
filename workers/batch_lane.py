"""The provider Batch-API lane in a worker: hand jobs over, pack them, poll, finish or fall back.

(Not wired into the pipeline yet: next, the pipeline hands eligible jobs over after the claim —
unless the record carries ``headway-online`` — the worker runs :meth:`BatchLane.run_forever`
with clients from the provider registry, and an end-to-end test covers it.)

See docs/batch-lane.md. Every worker runs the pack and poll loops; the ledger's leases make
sure a pending item is packed by one worker and a submission polled by one at a time.

- :meth:`BatchLane.hand_over` (from the pipeline, after the claim): the job's request line is
  stored and its row handed to the lane; the record's offset may then be committed.
- :meth:`BatchLane.pack_once`: per deployment, pending items up to the provider's limits
  (requests and bytes) or ``max_items``, submitted as one provider batch.
- :meth:`BatchLane.poll_once`: one submission whose lease this worker takes; when ended, each
  item is finished like an online call at the batch price, or — expired, cancelled, a
  retryable error, or its batch failed — handed back to the online path through the retry
  topic, in time for its deadline.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.config import DeploymentConfig, HeadwayConfig
from broker.topics import HEADER_ONLINE
from schemas.jobs import JobKind, JobRequest
from schemas.results import ChatOutput, EmbeddingOutput
from workers.execution import Execution, ProviderCall
from workers.ledger import batch_lane as rows
from workers.outcomes import Identity, executed_result, usage_events
from workers.providers.base import ChatCall, ChatResponse, EmbeddingCall
from workers.providers.batch_apis import BatchAPI, Outcome
from workers.publisher import Publisher
from workers.settlement import Settlement

log = logging.getLogger(__name__)

Run = Callable[[Callable[[AsyncConnection], Awaitable[Any]]], Awaitable[Any]]
PACK_LEASE_S = 300.0
POLL_LEASE_S = 120.0
HOLD_S = 26 * 3600.0  # how long the lane holds a job without a deadline before it lapses


@dataclass(frozen=True, slots=True)
class LaneSettings:
    pack_every_s: float = 5.0
    poll_every_s: float = 10.0
    max_items: int | None = None  # per submission, below the provider's own limit


def custom_id(tenant: str, job_id: str) -> str:
    """A provider-safe id (Anthropic: ``[A-Za-z0-9_-]{1,64}``) unique per (tenant, job_id)."""
    return hashlib.sha256(f"{tenant}\x00{job_id}".encode()).hexdigest()[:40]


def _call(
    job: JobRequest, deployment: DeploymentConfig, messages: list[dict[str, str]] | None
) -> ChatCall | EmbeddingCall:
    if job.kind is JobKind.CHAT:
        return ChatCall(deployment.model, messages or [], job.params, job.job_id)
    dimensions = job.params.dimensions if job.params else None
    return EmbeddingCall(deployment.model, job.inputs, dimensions, job.job_id)


class BatchLane:
    def __init__(
        self,
        config: HeadwayConfig,
        apis: dict[str, BatchAPI],
        run: Run,
        settlement: Settlement,
        publisher: Publisher,
        owner: str,
        settings: LaneSettings = LaneSettings(),
    ) -> None:
        self._config = config
        self._apis = apis
        self._run = run
        self._settlement = settlement
        self._publisher = publisher
        self._owner = owner
        self._settings = settings
        self._deployments = {
            d.key: d for route in config.routes.values() for d in route.deployments if d.batch
        }

    # -- hand-over ----------------------------------------------------------------------------

    async def hand_over(
        self,
        job: JobRequest,
        who: Identity,
        deployment: DeploymentConfig,
        messages: list[dict[str, str]] | None,
        topic: str,
        record: ConsumerRecord[bytes, bytes],
        generation: int,
    ) -> None:
        api = self._apis[deployment.provider]
        cid = custom_id(job.tenant, job.job_id)
        line = api.line(cid, _call(job, deployment, messages))
        now = time.time()
        deadline = job.deadline.timestamp() if job.deadline is not None else None
        item = rows.Item(
            tenant=job.tenant,
            job_id=job.job_id,
            custom_id=cid,
            deployment_key=deployment.key,
            kind=job.kind.value,
            line=line.decode(),
            job_json=json.dumps({"job": job.model_dump(mode="json"), "messages": messages}),
            who_json=json.dumps(_who_json(who)),
            topic=topic,
            record_value=base64.b64encode(record.value or b"").decode(),
            record_headers=json.dumps(
                {
                    "topic": record.topic,
                    "headers": [
                        [name, base64.b64encode(value).decode()]
                        for name, value in record.headers or ()
                    ],
                }
            ),
            deadline=deadline,
            generation=generation,
        )
        hold_until = deadline if deadline is not None else now + HOLD_S
        await self._run(lambda conn: rows.enqueue(conn, item, hold_until, now))

    # -- packing ------------------------------------------------------------------------------

    async def pack_once(self) -> int:
        """Submit what is pending; returns the number of submissions made."""
        made = 0
        keys: list[str] = await self._run(
            lambda conn: rows.deployments_with_pending(conn, time.time())
        )
        for key in keys:
            deployment = self._deployments.get(key)
            if deployment is None:
                continue  # a deployment no longer batched here: another config's worker packs it
            while await self._pack(deployment):
                made += 1
        return made

    async def _pack(self, deployment: DeploymentConfig) -> bool:
        api = self._apis[deployment.provider]
        limit = min(api.limits.max_requests, self._settings.max_items or api.limits.max_requests)
        now = time.time()
        items: list[rows.Item] = await self._run(
            lambda conn: rows.take_pending(
                conn, deployment.key, limit, self._owner, PACK_LEASE_S, now
            )
        )
        if not items:
            return False
        chosen: list[rows.Item] = []
        size = 0
        for item in items:
            size += len(item.line.encode()) + 1
            if size > api.limits.max_bytes and chosen:
                break
            chosen.append(item)
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
        await self._run(
            lambda conn: rows.submitted(
                conn, batch_id, deployment.key, chosen, self._owner, time.time()
            )
        )
        log.info("submitted %d jobs to %s as batch %s", len(chosen), deployment.key, batch_id)
        return True

    # -- polling ------------------------------------------------------------------------------

    async def poll_once(self) -> bool:
        """Look at one submission; True when one was looked at."""
        due: tuple[str, str] | None = await self._run(
            lambda conn: rows.take_due_batch(conn, self._owner, POLL_LEASE_S, time.time())
        )
        if due is None:
            return False
        batch_id, key = due
        deployment = self._deployments.get(key)
        if deployment is None:
            return True
        api = self._apis[deployment.provider]
        state = await api.state(batch_id)
        if not state.ended:
            return True
        items: list[rows.Item] = await self._run(lambda conn: rows.items_of(conn, batch_id))
        calls = {item.custom_id: _call_of(item, deployment) for item in items}
        outcomes = (
            {o.custom_id: o for o in await api.results(batch_id, calls)} if not state.failed else {}
        )
        for item in items:
            await self._settle(item, deployment, outcomes.get(item.custom_id))
        await self._run(lambda conn: rows.batch_ended(conn, batch_id, time.time()))
        return True

    async def _settle(
        self, item: rows.Item, deployment: DeploymentConfig, outcome: Outcome | None
    ) -> None:
        key = (item.tenant, item.job_id)
        if (
            outcome is None
            or outcome.expired
            or (outcome.error is not None and outcome.error.retryable)
        ):
            await self._back_online(item)
            return
        who = Identity(**json.loads(item.who_json))
        execution = _execution(deployment, outcome)
        result = executed_result(who, execution)
        events = usage_events(who, execution.calls, item.generation)
        await self._settlement.finish(result, events, item.topic)
        await self._run(lambda conn: rows.items_done(conn, [key]))

    async def _back_online(self, item: rows.Item) -> None:
        """Republish the original record to the retry topic, due now, and let the job's row go."""
        key = (item.tenant, item.job_id)
        await self._run(lambda conn: rows.release_jobs(conn, [key]))
        saved = json.loads(item.record_headers)
        headers = [(name, base64.b64decode(raw)) for name, raw in saved["headers"]]
        headers.append((HEADER_ONLINE, b"1"))
        value = base64.b64decode(item.record_value)
        record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
            saved["topic"], 0, 0, 0, 0, item.job_id.encode(), value, None, 0, len(value), headers
        )
        await (await self._publisher.park(record, time.time(), 0, 0))
        await self._run(lambda conn: rows.items_done(conn, [key]))

    async def run_forever(self) -> None:
        async def packing() -> None:
            while True:
                await asyncio.sleep(self._settings.pack_every_s)
                try:
                    await self.pack_once()
                except Exception as error:
                    log.warning("batch packing failed: %s", error)

        async def polling() -> None:
            while True:
                await asyncio.sleep(self._settings.poll_every_s)
                try:
                    while await self.poll_once():
                        pass
                except Exception as error:
                    log.warning("batch polling failed: %s", error)

        await asyncio.gather(packing(), polling())


def _who_json(who: Identity) -> dict[str, Any]:
    data = {name: getattr(who, name) for name in Identity.__dataclass_fields__}
    data["kind"] = who.kind.value if who.kind is not None else None
    data["guardrail_flags"] = list(who.guardrail_flags)
    return data


def _call_of(item: rows.Item, deployment: DeploymentConfig) -> ChatCall | EmbeddingCall:
    saved = json.loads(item.job_json)
    return _call(JobRequest.model_validate(saved["job"]), deployment, saved["messages"])


def _execution(deployment: DeploymentConfig, outcome: Outcome) -> Execution:
    execution = Execution(attempts=1)
    if outcome.error is not None:
        execution.error = outcome.error
        return execution
    reply = outcome.reply
    assert reply is not None
    if isinstance(reply, ChatResponse):
        output: ChatOutput | EmbeddingOutput = ChatOutput(
            text=reply.text, finish_reason=reply.finish_reason
        )
        tokens_in, tokens_out = reply.input_tokens, reply.output_tokens
    else:
        output = EmbeddingOutput(embeddings=reply.embeddings)
        tokens_in, tokens_out = reply.input_tokens, 0
    call = ProviderCall(
        provider=deployment.provider,
        deployment=deployment,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost_usd=deployment.batch_cost_usd(tokens_in, tokens_out),
        estimated=reply.estimated,
    )
    execution.output, execution.served_by, execution.calls = output, call, [call]
    return execution
