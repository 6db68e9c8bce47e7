"""In-memory stand-ins for what a job's path talks to, for unit tests that run in milliseconds.

- :class:`RecordingBatches` — the producer's record batches: every record is acknowledged at
  once and kept, so a real :class:`Publisher` over it is a recording publisher.
- :class:`ScriptedProvider` — a provider whose answers (or errors) come from a script.
- :class:`MemoryLedger` — the ledger's job rows in a dict: claim, finish, settle, release,
  with the same first-finisher-wins rule as the database.
- :func:`pipeline_for` — a :class:`JobPipeline` wired like a worker's, over these fakes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord

from broker.config import HeadwayConfig, parse_config
from broker.errors import ProviderError
from broker.settings import CircuitSettings, EmbedSettings, RetrySettings
from broker.topics import Topics
from schemas.jobs import Priority
from workers.admission.budgets import Budgets
from workers.admission.gate import Admission
from workers.batch_lane.items import Handed
from workers.calls.executor import Executor
from workers.calls.health import HealthBoard
from workers.calls.limits import LimitBoard
from workers.calls.microbatch import MicroBatcher
from workers.calls.retry import RetryPolicy
from workers.calls.routing import DeploymentState, Router
from workers.calls.slots import CallSlots
from workers.calls.tokens import Calibration
from workers.guardrails.screening import Guardrails
from workers.ledger.database.models import RowStatus
from workers.ledger.repository import (
    AlreadyFinished,
    Claim,
    Claimed,
    ClaimOutcome,
    Finish,
    FinishOutcome,
    HeldElsewhere,
    Stored,
)
from workers.pipeline.access import AccessControl
from workers.pipeline.cancellations import Cancellations
from workers.pipeline.claimants import Claimants
from workers.pipeline.job_pipeline import JobPipeline
from workers.pipeline.parking import Parking
from workers.pipeline.parts import Calls, Checks, Endings, Telemetry
from workers.pipeline.preparation import Preparation
from workers.pipeline.response_cache import ResponseCache
from workers.providers.base import ChatCall, ChatResponse, EmbeddingCall, EmbeddingResponse
from workers.settle.outcomes import result_topic
from workers.settle.poison import PoisonPath
from workers.settle.publisher import Publisher
from workers.settle.settlement import Settlement
from workers.telemetry.metrics import Metrics
from workers.telemetry.tracing import Tracing
from workers.templates.catalog import TemplateCatalog

Answer = ChatResponse | EmbeddingResponse | ProviderError | float  # a float: seconds of silence


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]

    def json(self) -> Any:
        assert self.value is not None
        return json.loads(self.value)


class RecordingBatches:
    """Stands in for the producer's record batches: acknowledges every record, keeps it."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []

    async def append(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Any = ()
    ) -> asyncio.Future[None]:
        self.sent.append(Sent(topic, key, value, list(headers)))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def on(self, topic: str) -> list[Sent]:
        return [record for record in self.sent if record.topic == topic]


class ScriptedProvider:
    """A provider answering each call with the next answer of its script (the last one
    repeats); every call is kept in ``calls``."""

    def __init__(self, name: str, *answers: Answer) -> None:
        self.name = name
        self.script: list[Answer] = list(answers) or [ChatResponse("ok", "stop", 10, 2)]
        self.calls: list[ChatCall | EmbeddingCall] = []

    async def _next(self) -> ChatResponse | EmbeddingResponse:
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(answer, float):
            await asyncio.sleep(answer)
            return ChatResponse("late", "stop", 10, 2)
        if isinstance(answer, ProviderError):
            raise answer
        return answer

    async def chat(self, call: ChatCall) -> ChatResponse:
        self.calls.append(call)
        answer = await self._next()
        assert isinstance(answer, ChatResponse)
        return answer

    async def embed(self, call: EmbeddingCall) -> EmbeddingResponse:
        self.calls.append(call)
        answer = await self._next()
        assert isinstance(answer, EmbeddingResponse)
        return answer


@dataclass
class _Row:
    owner: str | None
    generation: int
    result_json: str | None = None
    status: RowStatus = RowStatus.RUNNING
    usage: list[str] = field(default_factory=list)


class _Repository:
    def __init__(self, owner: str) -> None:
        self.owner = owner


class MemoryLedger:
    """The ledger's job rows in a dict, with the database's rules: one claimant holds a
    running row; the first finisher wins and later ones get the stored result. ``run``
    (the SQL of caches, templates, quotas, cancels) is counted and finds no rows."""

    def __init__(self, owner: str = "this-worker") -> None:
        self.repository = _Repository(owner)
        self.rows: dict[tuple[str, str], _Row] = {}
        self.ran = 0

    def finished(self, tenant: str, job_id: str) -> Any:
        row = self.rows[(tenant, job_id)]
        assert row.result_json is not None, "the job was not finished"
        return json.loads(row.result_json)

    def held_by(self, tenant: str, job_id: str, owner: str) -> None:
        """Another worker holds the job (its lease live)."""
        self.rows[(tenant, job_id)] = _Row(owner, 1)

    async def claim(self, claim: Claim) -> ClaimOutcome:
        row = self.rows.get(claim.key)
        if row is None:
            self.rows[claim.key] = _Row(self.repository.owner, 1)
            return Claimed(1)
        if row.result_json is not None:
            return AlreadyFinished(row.result_json, list(row.usage))
        if row.owner not in (None, self.repository.owner):
            return HeldElsewhere(row.owner, time.time() + 30)
        row.owner, row.generation = self.repository.owner, row.generation + 1
        return Claimed(row.generation)

    async def finish(self, finish: Finish) -> FinishOutcome:
        return self._store(finish)

    async def settle(self, finish: Finish) -> FinishOutcome:
        return self._store(finish)

    def _store(self, finish: Finish) -> FinishOutcome:
        key = (finish.tenant, finish.job_id)
        row = self.rows.setdefault(key, _Row(None, 0))
        if row.result_json is not None:
            return AlreadyFinished(row.result_json, list(row.usage))
        row.result_json, row.status, row.owner = finish.result_json, finish.status, None
        row.usage = [usage.payload for usage in finish.usage]
        return Stored()

    async def release(self, key: tuple[str, str]) -> None:
        row = self.rows.get(key)
        if row is not None and row.result_json is None:
            row.owner = None

    async def run(self, work: Callable[[Any], Any]) -> Any:
        self.ran += 1
        return []


class HandedOver:
    """Stands in for the batch lane: keeps what the pipeline hands over."""

    def __init__(self) -> None:
        self.items: list[Handed] = []

    async def hand_over(self, handed: Handed) -> None:
        self.items.append(handed)


@dataclass
class Harness:
    """A pipeline and the fakes it runs on."""

    pipeline: JobPipeline
    ledger: MemoryLedger
    batches: RecordingBatches
    topics: Topics
    cancellations: Cancellations
    batch_lane: HandedOver
    offsets: Iterable[int] = field(default_factory=lambda: iter(range(1_000_000)))

    def record(
        self,
        job: dict[str, Any] | bytes,
        topic: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> ConsumerRecord[bytes, bytes]:
        value = job if isinstance(job, bytes) else json.dumps(job).encode()
        key = None if isinstance(job, bytes) else str(job.get("tenant", "")).encode()
        return ConsumerRecord(
            topic=topic or self.topics.jobs(Priority.NORMAL),
            partition=0,
            offset=next(iter(self.offsets)),
            timestamp=int(time.time() * 1000),
            timestamp_type=0,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=len(key or b""),
            serialized_value_size=len(value),
            headers=tuple(headers or ()),
        )

    def results(self, topic: str | None = None) -> list[Any]:
        return [sent.json() for sent in self.batches.on(topic or self.topics.results)]

    def dead_letters(self) -> list[Sent]:
        return self.batches.on(self.topics.dlq)

    def parked(self) -> list[Sent]:
        return self.batches.on(self.topics.retry)


def config_of(raw: dict[str, Any]) -> HeadwayConfig:
    return parse_config(raw)


def pipeline_for(
    config: HeadwayConfig,
    providers: dict[str, ScriptedProvider],
    *,
    retry: RetrySettings | None = None,
    admission: Any = None,
    batch_lane: bool = False,
) -> Harness:
    """A :class:`JobPipeline` wired as :mod:`workers.runtime.wiring` wires a worker's, over
    in-memory fakes: no broker, no database, no HTTP. ``admission`` replaces the ledger-backed
    one (a fake answering ``admit``/``release``)."""
    topics = Topics("hw")
    ledger: Any = MemoryLedger()
    batches = RecordingBatches()
    publisher = Publisher(batches, topics, 1024 * 1024)  # type: ignore[arg-type]
    metrics, tracing = Metrics(config.tenants, config.routes), Tracing.off()
    access = AccessControl(config)
    cancellations = Cancellations(ledger.run)
    preparation = Preparation(
        config, access, TemplateCatalog(ledger.run), Guardrails(config, metrics.guardrail)
    )
    deployments = DeploymentState(HealthBoard(CircuitSettings()), LimitBoard(64), Calibration())
    retry = retry if retry is not None else RetrySettings(initial_s=0.0, max_wait_s=0.0)

    async def no_sleep(_: float) -> None:
        return None

    executor = Executor(
        dict(providers),  # type: ignore[arg-type]
        RetryPolicy(retry, sleep=no_sleep),
        deployments,
        CallSlots(8),
        MicroBatcher(deployments.limits, EmbedSettings(linger_s=0.001)),
        None,
    )
    router = Router(deployments)
    if admission is None:
        budgets = Budgets(router, ledger.run, "this-worker", 30.0, time.time)
        admission = Admission(ledger.run, budgets, "this-worker", 30.0)
    settlement = Settlement(
        ledger,
        publisher,
        topics,
        metrics,
        tracing,
        max_result_bytes=1024 * 1024,
        fallback_topic=lambda tenant: result_topic(None, config.tenant(tenant), topics),
    )
    lane = HandedOver()
    pipeline = JobPipeline(
        config,
        topics,
        ledger,
        Checks(
            preparation,
            cancellations,
            None,
            ResponseCache(ledger.run),
            admission,
            Claimants(),
        ),
        Calls(router, executor, retry),
        Endings(
            settlement,
            Parking(publisher, ledger, metrics, retry),
            PoisonPath(config, topics, publisher, settlement, access),
            lane if batch_lane else None,  # type: ignore[arg-type]
        ),
        Telemetry(metrics, tracing),
        1024 * 1024,
    )
    return Harness(pipeline, ledger, batches, topics, cancellations, lane)
