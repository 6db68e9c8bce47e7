"""Telling a replay by ``headway dlq replay`` from a producer's forged ``headway-replay``.

A replayed job may run again although its stored result is ``failed`` or ``rejected``; any
producer can write the header, so on its own it proves nothing. The header names the dead
letter replayed (``<dlq partition>:<dlq offset>``), and only workers write the dead-letter
topic: a replay is genuine when that dead letter holds the record's very key and value. The
dead letter is read once (and remembered); a header naming anything else is ignored — the job
is an ordinary redelivery, answered from the ledger — and logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from types import TracebackType

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from broker.headers import header_text
from broker.topics import HEADER_REPLAY

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 10.0
REMEMBERED = 10_000  # dead letters whose key and value are kept, most recent first


class ReplayCheck:
    """``async with ReplayCheck(consumer_factory, dlq) as check: await check.genuine(r)``."""

    def __init__(self, reader: AIOKafkaConsumer, dlq: str) -> None:
        """``reader``: a consumer in no consumer group (started and stopped here)."""
        self._reader = reader
        self._dlq = dlq
        self._letters: OrderedDict[tuple[int, int], tuple[bytes | None, bytes | None]] = (
            OrderedDict()
        )
        self._lock = asyncio.Lock()
        self.forged = 0  # replay headers that named no matching dead letter

    async def __aenter__(self) -> ReplayCheck:
        await self._reader.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._reader.stop()

    async def genuine(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Whether ``record`` is a replay ``headway dlq replay`` made."""
        named = _position(header_text(record.headers, HEADER_REPLAY))
        if named is None:
            return False
        letter = await self._letter(*named)
        if letter == (record.key, record.value):
            return True
        self.forged += 1
        log.warning(
            "ignoring a headway-replay header naming %s:%d:%d: no such dead letter holds this "
            "record's bytes (a replay only `headway dlq replay` can make)",
            self._dlq,
            *named,
        )
        return False

    async def _letter(self, partition: int, offset: int) -> tuple[bytes | None, bytes | None]:
        key = (partition, offset)
        async with self._lock:
            known = self._letters.get(key)
            if known is None:
                known = await self._read(partition, offset)
                self._letters[key] = known
                while len(self._letters) > REMEMBERED:
                    self._letters.popitem(last=False)
            return known

    async def _read(self, partition: int, offset: int) -> tuple[bytes | None, bytes | None]:
        """The dead letter's (key, value); (None, None) when there is none to read."""
        tp = TopicPartition(self._dlq, partition)
        reader = self._reader
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                reader.assign([tp])
                reader.seek(tp, offset)
                batch = await reader.getmany(tp, timeout_ms=int(READ_TIMEOUT_S * 1000))
        except Exception as error:  # no such partition, Kafka away: not a replay we can prove
            log.warning("cannot read dead letter %s:%d:%d: %r", self._dlq, partition, offset, error)
            return (None, None)
        for found in batch.get(tp, []):
            if found.offset == offset:
                return (found.key, found.value)
        return (None, None)


def _position(text: str) -> tuple[int, int] | None:
    partition, _, offset = text.partition(":")
    if not (partition.isdigit() and offset.isdigit()) or len(text) > 40:
        return None
    return int(partition), int(offset)
