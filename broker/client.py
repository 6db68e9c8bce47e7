"""HeadwayClient: the producer SDK for batch pipelines.

    async with HeadwayClient(settings) as client:
        await client.submit_many(jobs)                  # tens of thousands of jobs/s
        async for result in client.results("batch-7", tenant="acme"):  # one batch's
            ...
        async with client.subscribe("my-pipeline", batch="batch-7", tenant="acme") as results:
            async for result in results:                # resumes where the group left off
                ...

``submit_many`` appends every record to a per-partition batch first (broker/record_batches.py: ~3 µs
a record where ``AIOKafkaProducer.send`` costs ~15 µs) and waits for the deliveries together at
the end (one awaited send per job would cap throughput at the round trip time).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry import trace

from broker.kafka import producer_options, require_bootstrap, topic_partitions
from broker.record_batches import RecordBatchSender, delivered
from broker.settings import Settings
from broker.subscription import Subscription, require_tenant, wanted_result
from broker.topics import HEADER_SIGNATURE, Topics
from broker.tracing import Headers, trace_headers
from schemas.control import ControlCommand
from schemas.jobs import JobRequest, Priority
from schemas.results import JobResult

JobLike = JobRequest | Mapping[str, Any]
NOT_OPEN = "HeadwayClient is not open: use `async with HeadwayClient(...)`"
log = logging.getLogger(__name__)


def sign(value: bytes, secret: str) -> str:
    """The ``headway-signature`` header value for ``value``."""
    return "v1=" + hmac.new(secret.encode(), value, hashlib.sha256).hexdigest()


def encode_job(job: JobLike) -> tuple[JobRequest, bytes]:
    """Validate (when given a mapping) and serialise a job exactly once."""
    request = job if isinstance(job, JobRequest) else JobRequest.model_validate(job)
    return request, request.model_dump_json(exclude_none=True).encode()


class HeadwayClient:
    """Jobs in, results out. Each ``submit`` runs in a producer span (``submit_many``: one span
    for the call) whose W3C trace context goes into the records' headers, so a worker continues
    the trace; spans go to ``tracer_provider`` or, by default, the global one (a no-op until the
    application configures OpenTelemetry)."""

    def __init__(
        self,
        settings: Settings,
        *,
        signing_secret: str | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        self.topics: Topics = settings.topics
        self._signing_secret = signing_secret
        self._tracer = trace.get_tracer("headway.client", tracer_provider=tracer_provider)
        self._producer: AIOKafkaProducer | None = None
        self._batches: RecordBatchSender | None = None

    async def __aenter__(self) -> HeadwayClient:
        producer = AIOKafkaProducer(**producer_options(self.settings))
        await producer.start()
        self._producer = producer
        self._batches = RecordBatchSender(producer, self.settings.producer_linger_ms / 1000)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        producer, self._producer = self._producer, None
        batches, self._batches = self._batches, None
        if producer is not None:
            try:
                if batches is not None:
                    await batches.drain()  # what a cancelled submit left appended
            finally:
                await producer.stop()

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError(NOT_OPEN)
        return self._producer

    @property
    def batches(self) -> RecordBatchSender:
        """Where jobs are appended: per-partition batches on :attr:`producer`."""
        if self._batches is None:
            raise RuntimeError(NOT_OPEN)
        return self._batches

    def lane_topic(self, request: JobRequest, priority: Priority | None = None) -> str:
        return self.topics.jobs(priority or request.priority or Priority.NORMAL)

    async def _enqueue(
        self, job: JobLike, priority: Priority | None, traced: Headers
    ) -> asyncio.Future[None]:
        """Append one job to its lane's batch; the future (shared with the batch) is done once
        the broker has it."""
        request, value = encode_job(job)
        headers = traced
        if self._signing_secret is not None:
            signature = (HEADER_SIGNATURE, sign(value, self._signing_secret).encode())
            headers = [*traced, signature]
        topic = self.lane_topic(request, priority)
        return await self.batches.append(topic, request.job_id.encode(), value, headers)

    async def submit(self, job: JobLike, *, priority: Priority | None = None) -> None:
        """Publish one job and wait until the broker has it."""
        with self._tracer.start_as_current_span("headway submit", kind=trace.SpanKind.PRODUCER):
            await delivered([await self._enqueue(job, priority, trace_headers())])

    async def submit_many(
        self, jobs: Iterable[JobLike], *, priority: Priority | None = None
    ) -> int:
        """Publish many jobs; returns once the broker has all of them."""
        kind = trace.SpanKind.PRODUCER
        with self._tracer.start_as_current_span("headway submit_many", kind=kind) as span:
            traced = trace_headers()
            count = 0
            futures: dict[int, asyncio.Future[None]] = {}
            for job in jobs:
                future = await self._enqueue(job, priority, traced)
                futures[id(future)] = future  # one per batch, shared by its records
                count += 1
            self.batches.flush()
            await delivered(list(futures.values()))
            span.set_attribute("messaging.batch.message_count", count)
        return count

    async def cancel(self, command: ControlCommand) -> None:
        """Publish a cancel command (signed like jobs when this client has a secret)."""
        await self.control(command)

    async def control(self, command: ControlCommand) -> None:
        """Publish a control command — a cancel, a batch's budget — to the control topic,
        signed like jobs when this client has a secret."""
        value = command.model_dump_json(exclude_none=True).encode()
        headers: list[tuple[str, bytes]] = []
        if self._signing_secret is not None:
            headers = [(HEADER_SIGNATURE, sign(value, self._signing_secret).encode())]
        await (
            await self.producer.send(
                self.topics.control, value=value, key=command.tenant.encode(), headers=headers
            )
        )

    def subscribe(
        self,
        group: str,
        *,
        batch: str | None = None,
        tenant: str | None = None,
        topic: str | None = None,
        idle_timeout_s: float | None = None,
    ) -> Subscription:
        """Results for the consumer group ``group``, resuming where it left off, committed as
        they are handled (:mod:`broker.subscription`); of one tenant when given, and of one of
        its batches (a batch names its tenant: two tenants may share a batch id).
        Ends after ``idle_timeout_s`` without a new record, or never when it is None. It needs
        no producer: usable before (or without) entering the client."""
        return Subscription(
            self.settings,
            group,
            topic or self.topics.results,
            batch=batch,
            tenant=tenant,
            idle_timeout_s=idle_timeout_s,
        )

    async def results(
        self,
        batch_id: str | None = None,
        *,
        tenant: str | None = None,
        topic: str | None = None,
        idle_timeout_s: float | None = None,
    ) -> AsyncIterator[JobResult]:
        """Results on the results topic (from its start), optionally of one tenant, and of one
        of its batches (a batch names its tenant: two tenants may share a batch id).

        Ends after ``idle_timeout_s`` without a new message, or never when it is None."""
        require_tenant(batch_id, tenant)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=require_bootstrap(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            partitions = await topic_partitions(consumer, topic or self.topics.results)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            async for result in _iterate(consumer, batch_id, tenant, idle_timeout_s):
                yield result
        finally:
            await consumer.stop()


async def _iterate(
    consumer: AIOKafkaConsumer,
    batch_id: str | None,
    tenant: str | None,
    idle_timeout_s: float | None,
) -> AsyncIterator[JobResult]:
    loop = asyncio.get_running_loop()
    last = loop.time()
    while True:
        batches = await consumer.getmany(timeout_ms=200)
        if batches:
            last = loop.time()
        elif idle_timeout_s is not None and loop.time() - last > idle_timeout_s:
            return
        for records in batches.values():
            for record in records:
                result = wanted_result(record, batch_id, tenant)  # logs what is no JobResult
                if result is not None:
                    yield result
