"""Publishing results, usage events, parked jobs and dead letters with one shared producer.

Records are appended to per-partition batches (broker/record_batches.py), so thousands of jobs share
each produce request. :meth:`Publisher.publish` sees each record through to an acknowledgement:

- a transient failure (brokers down, leaders moving, too few in-sync replicas, a delivery
  timeout) is retried with backoff for as long as it lasts: the job waits, like it waits for
  the ledger, and its stored result is never given up;
- a topic that refuses a record for good (missing, record too large, not authorised) sends it
  to the record's fallback topic, with the reason in ``headway-error`` and the refused topic in
  ``headway-redirected-from`` (a result whose reply topic does not exist goes to its tenant's
  results topic); a record without a fallback is logged and dropped — results and usage stay in
  the ledger. No such record stops a worker or holds back its partition's offsets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import ConsumerRecord

from broker.headers import header_text
from broker.kafka import refused_for_good
from broker.record_batches import RecordBatchSender, delivered
from broker.topics import (
    HEADER_ATTEMPTS,
    HEADER_ERROR,
    HEADER_NOT_BEFORE,
    HEADER_REDIRECTED_FROM,
    HEADER_RETRY_COUNT,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    HEADER_TRUNCATED,
    Topics,
)
from workers.telemetry.logs import redact

MAX_HEADER_TEXT = 1000
RECORD_SLACK_BYTES = 1024  # a record's own framing, beyond its key, value and headers
RETRY_S = (0.2, 5.0)  # first and longest wait before a record is sent again
_PARKING_HEADERS = {HEADER_NOT_BEFORE, HEADER_RETRY_COUNT, HEADER_ATTEMPTS, HEADER_SOURCE_TOPIC}
Headers = Sequence[tuple[str, bytes | None]]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to publish; ``fallback``: where it goes if its topic refuses it for good."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    fallback: str | None = None

    def redirected(self, error: BaseException) -> Outgoing:
        assert self.fallback is not None
        reason = f"{self.topic} refused the record: {error!r}"[:MAX_HEADER_TEXT]
        headers = [
            *self.headers,
            (HEADER_ERROR, reason.encode("utf-8", "replace")),
            (HEADER_REDIRECTED_FROM, self.topic.encode("utf-8", "replace")),
        ]
        return Outgoing(self.fallback, self.key, self.value, headers)


class Publisher:
    def __init__(
        self, batches: RecordBatchSender, topics: Topics, max_record_bytes: int | None = None
    ) -> None:
        """``max_record_bytes``: the most a dead letter's key, value and headers may take
        (``HEADWAY_MAX_MESSAGE_BYTES``); a larger value is cut to fit, its size noted."""
        self._batches = batches
        self.topics = topics
        self.max_record_bytes = max_record_bytes

    async def publish(self, records: Sequence[Outgoing]) -> None:
        """Return once every record is acknowledged, redirected or (refused for good, with no
        fallback) dropped; see the module doc. A cancelled caller cancels no delivery: the
        batches are shared with other jobs' records."""
        pending = list(records)
        wait = RETRY_S[0]
        while pending:
            futures = [await self._append(record) for record in pending]
            try:
                await delivered(futures)
                return
            except Exception:  # some failed: sorted out below, record by record
                await asyncio.wait(futures)
            pending, transient = self._after_failure(pending, futures)
            if transient:
                await asyncio.sleep(wait)
                wait = min(wait * 2, RETRY_S[1])

    async def _append(self, record: Outgoing) -> asyncio.Future[None]:
        try:
            return await self._batches.append(
                record.topic, record.key, record.value, record.headers
            )
        except Exception as error:  # e.g. the topic is missing: a failed delivery like any other
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(error)
            return failed

    @staticmethod
    def _after_failure(
        records: list[Outgoing], futures: list[asyncio.Future[None]]
    ) -> tuple[list[Outgoing], bool]:
        """What to send again (and whether a transient failure is among it)."""
        again: list[Outgoing] = []
        transient = False
        for record, future in zip(records, futures, strict=True):
            error = future.exception()
            if error is None:
                continue
            if not refused_for_good(error):
                log.warning("publishing to %s failed, sending again: %r", record.topic, error)
                again.append(record)
                transient = True
            elif record.fallback is not None and record.fallback != record.topic:
                log.error(
                    "%s refused a record for good, sent to %s: %r",
                    record.topic,
                    record.fallback,
                    error,
                )
                again.append(record.redirected(error))
            else:
                log.error(
                    "%s refused a record (key %r) for good and it has no other topic; "
                    "dropped (results and usage stay in the ledger): %r",
                    record.topic,
                    record.key,
                    error,
                )
        return again, transient

    async def drain(self) -> None:
        """Send what is waiting in open batches and wait for it."""
        await self._batches.drain()

    async def dead_letter(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        """The original key and bytes, with why and where it came from in the headers. A
        record too large for the dead-letter topic keeps its first bytes only (its size in
        ``headway-truncated``; the original stays at its source offset until retention)."""
        headers: list[tuple[str, bytes | None]] = [
            *(record.headers or ()),
            (HEADER_ERROR, redact(reason)[:MAX_HEADER_TEXT].encode("utf-8", "replace")),
            (HEADER_SOURCE_TOPIC, record.topic.encode()),
            (HEADER_SOURCE_PARTITION, str(record.partition).encode()),
            (HEADER_SOURCE_OFFSET, str(record.offset).encode()),
        ]
        key, value = record.key, record.value
        limit = self.max_record_bytes
        if limit is not None:
            used = sum(len(n) + len(v or b"") for n, v in headers) + RECORD_SLACK_BYTES
            if value is not None and used + len(key or b"") + len(value) > limit:
                headers.append((HEADER_TRUNCATED, str(len(value)).encode()))
                key = key[:MAX_HEADER_TEXT] if key is not None else None
                value = value[: max(0, limit - used - len(key or b""))]
        await self.publish([Outgoing(self.topics.dlq, key, value, headers)])

    async def park(
        self,
        record: ConsumerRecord[bytes, bytes],
        not_before_s: float,
        parks: int,
        attempts: int,
    ) -> None:
        """The job's original bytes to the retry topic, to run again from ``not_before_s``.

        Its own headers travel along (a signature stays valid); the lane it came from is kept
        across parks."""
        source = record.topic
        if record.topic == self.topics.retry:
            source = header_text(record.headers, HEADER_SOURCE_TOPIC, record.topic)
        headers = [(n, v) for n, v in record.headers or () if n not in _PARKING_HEADERS]
        headers += [
            (HEADER_NOT_BEFORE, str(round(not_before_s * 1000)).encode()),
            (HEADER_RETRY_COUNT, str(parks).encode()),
            (HEADER_ATTEMPTS, str(attempts).encode()),
            (HEADER_SOURCE_TOPIC, source.encode()),
        ]
        await self.publish([Outgoing(self.topics.retry, record.key, record.value, headers)])
