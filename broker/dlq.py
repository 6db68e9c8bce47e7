"""Reading and replaying the dead-letter topic (``headway dlq list`` / ``headway dlq replay``).

A dead letter is the original key and bytes of a job topic record, with why it was set aside
(``headway-error``) and where it came from (``headway-source-topic``/``-partition``/``-offset``)
in its headers, next to the record's own headers (a signature stays valid).

Replaying republishes the original bytes to the job lane the record first came from (a record
dead-lettered from the retry topic goes back to its lane, not to the retry topic), with the
dead-letter and parking headers removed and ``headway-replay: <partition>:<offset>`` added. That
header lets a job whose stored outcome is ``failed`` or ``rejected`` run again (the fix is
presumably deployed); a job that has since succeeded is not run again — its stored result is
re-published — so replaying the same letters twice is harmless.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from broker.headers import header_texts
from broker.kafka import producer_options, read_to_ends, require_bootstrap, topic_partitions
from broker.settings import Settings
from broker.topics import (
    HEADER_ATTEMPTS,
    HEADER_ERROR,
    HEADER_NOT_BEFORE,
    HEADER_REPLAY,
    HEADER_RETRY_COUNT,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    Topics,
)
from schemas.jobs import Priority

Headers = tuple[tuple[str, bytes | None], ...]
#: headers a replay does not carry over: the dead letter's own, and a parked job's schedule
_DROPPED = frozenset(
    {
        HEADER_ERROR,
        HEADER_SOURCE_TOPIC,
        HEADER_SOURCE_PARTITION,
        HEADER_SOURCE_OFFSET,
        HEADER_NOT_BEFORE,
        HEADER_RETRY_COUNT,
        HEADER_ATTEMPTS,
        HEADER_REPLAY,
    }
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    @classmethod
    def of(cls, record: ConsumerRecord[bytes, bytes]) -> DeadLetter:
        return cls(
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.value,
            tuple(record.headers or ()),
        )

    def _all(self, name: str) -> list[str]:
        return header_texts(self.headers, name)

    @property
    def error(self) -> str:
        errors = self._all(HEADER_ERROR)
        return errors[-1] if errors else ""

    @property
    def sources(self) -> list[str]:
        """The topics it passed through, first to last (a lane, then perhaps the retry topic)."""
        return self._all(HEADER_SOURCE_TOPIC)

    @property
    def source_offset(self) -> str:
        offsets = self._all(HEADER_SOURCE_OFFSET)
        return offsets[-1] if offsets else ""

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    def text(self) -> str:
        """What ``--filter`` searches: the error, the key and the value (as text)."""
        key = (self.key or b"").decode("utf-8", "replace")
        value = (self.value or b"").decode("utf-8", "replace")
        return f"{self.error}\n{key}\n{value}"

    def as_json(self) -> dict[str, Any]:
        value: dict[str, str] | None = None
        if self.value is not None:
            try:
                value = {"text": self.value.decode("utf-8")}
            except UnicodeDecodeError:
                value = {"base64": base64.b64encode(self.value).decode()}
        return {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.at.isoformat(),
            "key": None if self.key is None else self.key.decode("utf-8", "replace"),
            "error": self.error,
            "source_topic": self.sources[-1] if self.sources else None,
            "source_offset": self.source_offset or None,
            "size": len(self.value or b""),
            "value": value,
        }


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters: from ``since``, matching ``pattern``, at most ``limit``."""

    since: datetime | None = None
    limit: int | None = None
    pattern: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, since: datetime | None, limit: int | None, pattern: str | None) -> Selection:
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        try:
            compiled = re.compile(pattern, re.IGNORECASE) if pattern else None
        except re.error as error:
            raise ValueError(f"--filter: not a regular expression ({error})") from None
        return cls(since, limit, compiled)

    def matches(self, letter: DeadLetter) -> bool:
        if self.since is not None and letter.at < self.since:
            return False
        return self.pattern is None or self.pattern.search(letter.text()) is not None


def dlq_reader(settings: Settings) -> AIOKafkaConsumer:
    """A consumer of the dead-letter topic in no group, able to fetch its largest letters."""
    return AIOKafkaConsumer(
        bootstrap_servers=require_bootstrap(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=max(settings.max_message_bytes * 2, 1 << 20),
    )


async def read(settings: Settings, selection: Selection) -> AsyncIterator[DeadLetter]:
    """The selected dead letters written before the call, in offset order per partition."""
    topic = settings.topics.dlq
    consumer = dlq_reader(settings)
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, topic)
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        # a letter replayed and dead-lettered again during this read is not read (or replayed)
        cutoff_ms = int(time.time() * 1000)
        await _seek_start(consumer, partitions, selection.since)
        yielded = 0
        async for record in read_to_ends(consumer, ends, cutoff_ms):
            letter = DeadLetter.of(record)
            if selection.matches(letter):
                yield letter
                yielded += 1
                if selection.limit is not None and yielded >= selection.limit:
                    return
    finally:
        await consumer.stop()


async def _seek_start(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since: datetime | None
) -> None:
    await consumer.seek_to_beginning(*partitions)
    if since is None:
        return
    found = await consumer.offsets_for_times(
        {tp: int(since.timestamp() * 1000) for tp in partitions}
    )
    for tp, at in found.items():
        if at is not None:
            consumer.seek(tp, at.offset)


def replay_topic(letter: DeadLetter, topics: Topics) -> str:
    """The lane it first came from; the normal lane when that cannot be told."""
    lanes = topics.job_lanes
    for source in letter.sources:
        if source in lanes:
            return source
    return topics.jobs(Priority.NORMAL)


def replay_headers(letter: DeadLetter) -> list[tuple[str, bytes | None]]:
    kept = [(n, v) for n, v in letter.headers if n not in _DROPPED]
    return [*kept, (HEADER_REPLAY, f"{letter.partition}:{letter.offset}".encode())]


@dataclass(slots=True)
class ReplayReport:
    replayed: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    #: letters with no value (a record the Kafka client could not decode): nothing to replay
    skipped: int = 0


async def replay(
    settings: Settings, selection: Selection, *, dry_run: bool = False
) -> ReplayReport:
    """Republish the selected dead letters to their lanes (``dry_run``: only count them)."""
    report = ReplayReport()
    producer: AIOKafkaProducer | None = None
    if not dry_run:
        producer = AIOKafkaProducer(**producer_options(settings))
        await producer.start()
    try:
        pending: list[asyncio.Future[Any]] = []
        async for letter in read(settings, selection):
            if letter.value is None:
                report.skipped += 1
                continue
            topic = replay_topic(letter, settings.topics)
            if producer is not None:
                pending.append(
                    await producer.send(
                        topic, letter.value, key=letter.key, headers=replay_headers(letter)
                    )
                )
            report.replayed += 1
            report.by_topic[topic] = report.by_topic.get(topic, 0) + 1
        if pending:
            await asyncio.gather(*pending)
    finally:
        if producer is not None:
            await producer.stop()
    return report


def as_jsonl(letter: DeadLetter) -> str:
    return json.dumps(letter.as_json(), ensure_ascii=False)
