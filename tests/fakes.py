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
import dataclasses
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import ConsumerRecord

from broker.config import HeadwayConfig, parse_config
from broker.errors import LedgerRefused, ProviderError
from broker.settings import Settings
from broker.topics import Topics
from schemas.jobs import Priority
from workers.batch_lane.items import Handed
from workers.calls.retry import RetryPolicy
from workers.ledger.database.models import RowStatus
from workers.ledger.records import (
    AlreadyFinished,
    Claim,
    Claimed,
    ClaimOutcome,
    Finish,
    FinishOutcome,
    HeldElsewhere,
    Stored,
)
from workers.pipeline.cancellations import Cancellations
from workers.pipeline.job_pipeline import JobPipeline
from workers.pipeline.parts import Telemetry
from workers.providers.base import ChatCall, ChatResponse, EmbeddingCall, EmbeddingResponse
from workers.runtime.wiring import Seams, job_path
from workers.settle.publisher import Publisher
from workers.telemetry.metrics import Metrics
from workers.telemetry.tracing import Tracing

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
        self.refused: set[str] = set()  # job ids whose values the database refuses
        self.audits: list[Finish] = []  # the finishes whose audit records were written

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
        if finish.job_id in self.refused:
            raise LedgerRefused("the database refused a value")
        key = (finish.tenant, finish.job_id)
        row = self.rows.setdefault(key, _Row(None, 0))
        if row.result_json is not None:
            return AlreadyFinished(row.result_json, list(row.usage))
        row.result_json, row.status, row.owner = finish.result_json, finish.status, None
        row.usage = [usage.payload for usage in finish.usage]
        if finish.audit is not None:  # written with the result it describes, and only then
            self.audits.append(finish)
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
    settings: dict[str, Any] | None = None,
    admission: Any = None,
    batch_lane: bool = False,
) -> Harness:
    """A :class:`JobPipeline` built by the worker's own composition root
    (:func:`workers.runtime.wiring.job_path`) over in-memory fakes: no broker, no database,
    no HTTP, retries without sleeping. ``settings``: ``Settings`` fields to change;
    ``admission``: a stand-in answering ``admit``/``release``; ``batch_lane``: hand-overs go
    to a :class:`HandedOver`."""
    chosen = Settings(
        topic_prefix="hw",
        worker_id="this-worker",
        concurrency=8,
        embed_linger_ms=1.0,
        **(settings or {}),
    )
    topics = chosen.topics
    ledger: Any = MemoryLedger("this-worker")
    batches = RecordingBatches()
    publisher = Publisher(batches, topics, chosen.max_message_bytes)  # type: ignore[arg-type]

    async def no_sleep(_: float) -> None:
        return None

    pipeline = job_path(
        chosen,
        config,
        ledger=ledger,
        publisher=publisher,
        providers=dict(providers),  # type: ignore[arg-type]
        batch_apis={},
        replays=None,
        telemetry=Telemetry(Metrics(config.tenants, config.routes), Tracing.off()),
        on_free=lambda tenant: None,
        seams=Seams(retry=RetryPolicy(chosen.retry, sleep=no_sleep)),
    )
    lane = HandedOver()
    if admission is not None or batch_lane:
        checks, endings = pipeline.checks, pipeline.endings
        pipeline = JobPipeline(
            config,
            topics,
            ledger,
            dataclasses.replace(checks, admission=admission or checks.admission),
            pipeline.calls,
            dataclasses.replace(endings, batch_lane=lane if batch_lane else None),
            Telemetry(pipeline.metrics, pipeline.tracing),
            chosen.max_message_bytes,
        )
    return Harness(pipeline, ledger, batches, topics, pipeline.cancellations, lane)
