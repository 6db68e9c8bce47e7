"""A durable subscription to results: a consumer group that commits what its reader handled.

    async with client.subscribe("nightly-pipeline", batch="nightly", tenant="acme") as results:
        async for result in results:
            store(result)        # committed once the loop asks for the next one

At least once: a result is committed after the reader has asked for the one that follows it
(or left the ``async with`` block without an error), so a reader killed at any moment resumes
after the last result it certainly handled and may see a few again — drop them by (tenant,
job_id). Commits are batched (every ``COMMIT_EVERY`` results or ``COMMIT_INTERVAL_S``), and the
handled results of partitions taken away by a rebalance are committed before they go. Used
without ``async with`` (``async for result in client.subscribe(...)``), the last result is not
committed when the loop ends, since it cannot be told whether it was handled.

A subscription by batch names its tenant (:func:`require_tenant`): batch ids are chosen by
producers, so another tenant's batch may have the same id.

Results carry their tenant and batch in headers (``headway-tenant``, ``headway-batch``): a
result of another batch or tenant is passed over without being parsed. A result without them
(written by an older headway) is parsed and filtered by its fields; a record that is not a
JobResult is logged and passed over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from types import TracebackType

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from broker.errors import UnscopedRead
from broker.headers import has_header, header_bytes, header_text
from broker.kafka import require_bootstrap
from broker.settings import Settings
from broker.topics import HEADER_BATCH, HEADER_TENANT
from schemas.results import JobResult

COMMIT_EVERY = 500  # handled results between commits, at most
COMMIT_INTERVAL_S = 1.0  # seconds between commits, at most, while results are handled
POLL_MS = 200
log = logging.getLogger(__name__)


def require_tenant(batch: str | None, tenant: str | None) -> None:
    """A read of the results topic by batch is one tenant's: without ``tenant`` it would hand
    over every tenant's batch of that id (the OpenAI Batch format does not even show whose)."""
    if batch is not None and tenant is None:
        raise UnscopedRead(
            f"a read of batch {batch!r} names its tenant: batch ids are chosen by producers, "
            "so two tenants may share one"
        )


class Subscription:
    """Results of ``topic`` for a consumer group, optionally of one tenant (and one of its
    batches)."""

    def __init__(
        self,
        settings: Settings,
        group: str,
        topic: str,
        *,
        batch: str | None = None,
        tenant: str | None = None,
        idle_timeout_s: float | None = None,
    ) -> None:
        require_tenant(batch, tenant)
        self._settings = settings
        self._group = group
        self._topic = topic
        self._batch = batch
        self._tenant = tenant
        self._idle_timeout_s = idle_timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._handled: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self._since_commit = 0
        self._committed_at = time.monotonic()
        self._last: ConsumerRecord[bytes, bytes] | None = None  # yielded, not known handled
        self.passed_over = 0  # records of other batches or tenants, or not results

    async def __aenter__(self) -> Subscription:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=require_bootstrap(self._settings),
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._settings.session_timeout_ms,
            heartbeat_interval_ms=max(self._settings.session_timeout_ms // 4, 500),
            max_partition_fetch_bytes=max(self._settings.max_message_bytes, 1 << 20),
        )
        consumer.subscribe([self._topic], listener=_CommitOnRevoke(self))
        await consumer.start()
        self._consumer = consumer
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            if exc_type is None:  # the block ended normally: the last result was handled
                self._mark_handled()
            await self._commit(consumer)
        finally:
            await consumer.stop()

    @property
    def raw(self) -> bytes:
        """The bytes of the result last yielded, as written (fields this version does not
        know included): what a pipeline that stores results verbatim keeps."""
        return self._last.value or b"" if self._last is not None else b""

    def __aiter__(self) -> AsyncIterator[JobResult]:
        return self._results()

    async def _results(self) -> AsyncIterator[JobResult]:
        if self._consumer is not None:
            async for result in self._read(self._consumer):
                yield result
            return
        async with self:  # iterated without `async with`: open and close around the loop
            assert self._consumer is not None
            async for result in self._read(self._consumer):
                yield result

    async def _read(self, consumer: AIOKafkaConsumer) -> AsyncIterator[JobResult]:
        idle_since = time.monotonic()
        while True:
            batches = await consumer.getmany(timeout_ms=POLL_MS)
            if batches:
                idle_since = time.monotonic()
            elif (
                self._idle_timeout_s is not None
                and time.monotonic() - idle_since > self._idle_timeout_s
            ):
                return
            for tp, records in sorted(batches.items(), key=lambda item: item[0].partition):
                for record in records:
                    result = self._wanted(record)
                    if result is None:
                        self._handled[tp] = record.offset + 1
                        continue
                    self._last = record
                    yield result
                    self._mark_handled()  # the reader asked for the next one
            await self._commit_now_and_then(consumer)

    def _wanted(self, record: ConsumerRecord[bytes, bytes]) -> JobResult | None:
        result = wanted_result(record, self._batch, self._tenant)
        if result is None:
            self.passed_over += 1
        return result

    def _mark_handled(self) -> None:
        record, self._last = self._last, None
        if record is not None:
            self._handled[TopicPartition(record.topic, record.partition)] = record.offset + 1
            self._since_commit += 1

    async def _commit_now_and_then(self, consumer: AIOKafkaConsumer) -> None:
        due = time.monotonic() - self._committed_at >= COMMIT_INTERVAL_S
        if self._handled and (due or self._since_commit >= COMMIT_EVERY):
            await self._commit(consumer)

    async def _commit(
        self, consumer: AIOKafkaConsumer, only: set[TopicPartition] | None = None
    ) -> None:
        offsets = {tp: offset for tp, offset in self._handled.items() if only is None or tp in only}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as error:  # a rebalance took them: their new reader starts earlier
            log.warning("results handled were not committed (%s): they may be read again", error)
        for tp in offsets:
            self._handled.pop(tp, None)
        self._since_commit = 0
        self._committed_at = time.monotonic()

    async def commit_revoked(self, revoked: set[TopicPartition]) -> None:
        if self._consumer is not None:
            if (
                self._last is not None
                and TopicPartition(self._last.topic, self._last.partition) in revoked
            ):
                self._last = None  # not known handled: its partition's next reader gets it
            await self._commit(self._consumer, revoked)


def wanted_result(
    record: ConsumerRecord[bytes, bytes], batch: str | None, tenant: str | None
) -> JobResult | None:
    """The record's JobResult when it is of ``batch`` and ``tenant`` (any, when None): told
    apart by its headers without parsing where they are present, else by its fields; None
    for another batch's or tenant's result, or a record that is not a JobResult (logged)."""
    headers = record.headers
    if has_header(headers, HEADER_TENANT):  # filtered without parsing
        if tenant is not None and header_text(headers, HEADER_TENANT) != tenant:
            return None
        if batch is not None and header_bytes(headers, HEADER_BATCH) != batch.encode():
            return None
    try:
        result = JobResult.model_validate_json(record.value or b"")
    except ValidationError:
        log.warning("passing over a record that is not a JobResult at %s", record.offset)
        return None
    if (tenant is not None and result.tenant != tenant) or (
        batch is not None and result.batch_id != batch
    ):
        return None
    return result


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._subscription.commit_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        return None
