"""Finding a dead letter by its position, quickly, whatever position a record names.

A replayed job's ``headway-replay`` header names a dead letter (``<partition>:<offset>``), and
any producer can write one. Reading a position the dead-letter topic does not have would wait
a whole read timeout, so a position is first held against the topic's bounds:

- the bounds (start and end offsets) of its partitions are asked of the broker, remembered,
  and asked again only when a position at or past the remembered end is named — at most once
  per ``refresh_s``, one answer shared by every lookup waiting for it. A position at or past
  an end asked *after* its lookup began holds no letter: answered at once, without a read (a
  partition the topic does not have has none either);
- some Kafka-compatible brokers (Tansu) report an end short of the last batch's last record:
  one fetch from ``end - 1`` (the tail) tells the true end;
- a letter inside the bounds is read by a reader of its own partition — one read at a time
  per partition, one read per position however many ask — and remembered as a fingerprint
  (a SHA-256 of its key and value), not as its bytes.

No lock spans partitions, and nothing here waits longer than one read's timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from broker.errors import TopicMissing
from broker.kafka import topic_partitions

log = logging.getLogger(__name__)

REFRESH_S = 0.5  # the broker is asked for the topic's bounds at most this often
READ_TIMEOUT_S = 10.0  # the longest one read (or one ask for the bounds) may take
REMEMBERED = 100_000  # fingerprints of positions read, most recent kept

Fingerprint = bytes
Bounds = dict[int, tuple[int, int]]  # partition -> (start offset, end offset)


def fingerprint(key: bytes | None, value: bytes | None) -> Fingerprint:
    """What tells a record's key and value apart from any other's (null and empty differ)."""
    digest = hashlib.sha256()
    for part in (key, value):
        digest.update(b"\x00" if part is None else b"\x01%d:" % len(part))
        digest.update(part or b"")
    return digest.digest()


@dataclass(frozen=True, slots=True)
class Found:
    """A record read from the dead-letter topic, by its offset and fingerprint."""

    offset: int
    fingerprint: Fingerprint


class LetterSource(Protocol):
    """Where dead letters are read (Kafka: :class:`KafkaLetters`; tests: a fake)."""

    async def bounds(self) -> Bounds | None:
        """Every partition's (start, end) offsets as the broker reports them (None: no answer)."""

    async def read_from(self, partition: int, offset: int) -> list[Found] | None:
        """The records of one fetch from ``offset`` on (the first may be later: a gap), or
        None when nothing could be read within the timeout."""


class LetterLookup:
    """``await lookup.letter(partition, offset)``: the fingerprint of the dead letter there,
    or None when the topic holds none there (or it could not be read)."""

    def __init__(
        self,
        source: LetterSource,
        *,
        refresh_s: float = REFRESH_S,
        remembered: int = REMEMBERED,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._source = source
        self._refresh_s = refresh_s
        self._remembered = remembered
        self._clock = clock
        self._sleep = sleep
        self._bounds: Bounds = {}  # true ends (tails read), as of the last ask
        self._reported: dict[int, int] = {}  # ends as the broker reported them
        self._asked_at = float("-inf")  # clock() when the last ask for the bounds was made
        self._asking: asyncio.Task[None] | None = None
        self._letters: OrderedDict[tuple[int, int], Fingerprint | None] = OrderedDict()
        self._reads: dict[tuple[int, int], asyncio.Future[Fingerprint | None]] = {}
        self._partition_locks: dict[int, asyncio.Lock] = {}
        self.asks = 0  # times the broker was asked for the bounds
        self.reads = 0  # reads of the topic (tails included)

    async def letter(self, partition: int, offset: int) -> Fingerprint | None:
        began = self._clock()
        position = (partition, offset)
        if position in self._letters:
            self._letters.move_to_end(position)
            return self._letters[position]
        start, end = self._bounds.get(partition, (0, 0))
        if offset >= end:  # past what is known: is it past the end as of now?
            await self._bounds_since(began)
            start, end = self._bounds.get(partition, (0, 0))
            if offset >= end:
                return None
            if position in self._letters:  # its tail was just read
                return self._letters[position]
        if offset < start:  # removed by the topic's retention (starts only grow)
            return None
        return await self._read_once(partition, offset)

    async def close(self) -> None:
        """Stop an ask in flight (the worker drains)."""
        asking = self._asking
        if asking is not None:
            asking.cancel()
            await asyncio.gather(asking, return_exceptions=True)

    # -- the bounds ---------------------------------------------------------------------------

    async def _bounds_since(self, began: float) -> None:
        """Return once the bounds were asked at or after ``began`` (sharing one ask)."""
        while self._asked_at < began:
            asking = self._asking
            if asking is None:
                asking = self._asking = asyncio.create_task(self._ask())
            await asyncio.shield(asking)  # a waiter given up does not stop the others' ask

    async def _ask(self) -> None:
        try:
            wait = self._asked_at + self._refresh_s - self._clock()
            if wait > 0:
                await self._sleep(wait)
            asked_at = self._clock()
            self.asks += 1
            try:
                bounds = await self._source.bounds()
                if bounds is None:
                    log.warning("the dead-letter topic's end offsets could not be read")
                else:
                    await self._apply(bounds)
            finally:  # no answer: what was known is all that is known, until the next ask
                self._asked_at = asked_at
        finally:
            self._asking = None

    async def _apply(self, reported: Bounds) -> None:
        bounds: Bounds = {}
        for partition, (start, end) in sorted(reported.items()):
            true_end = end
            if self._reported.get(partition) == end:
                true_end = max(end, self._bounds.get(partition, (start, end))[1])
            elif start < end:  # the tail: a batch may end past the reported end
                found = await self._read(partition, end - 1)
                if found:
                    true_end = max(end, max(f.offset for f in found) + 1)
            bounds[partition] = (start, true_end)
            self._reported[partition] = end
        self._bounds = bounds

    # -- reading letters ----------------------------------------------------------------------

    async def _read_once(self, partition: int, offset: int) -> Fingerprint | None:
        position = (partition, offset)
        reading = self._reads.get(position)
        if reading is None:
            reading = self._reads[position] = asyncio.ensure_future(
                self._read_letter(partition, offset)
            )
            reading.add_done_callback(lambda _: self._reads.pop(position, None))
        return await asyncio.shield(reading)

    async def _read_letter(self, partition: int, offset: int) -> Fingerprint | None:
        found = await self._read(partition, offset)
        if found is None:  # not read (the broker away): not remembered either
            return None
        offsets = {record.offset for record in found}
        if offset not in offsets and (not offsets or max(offsets) > offset):
            self._remember(partition, offset, None)  # a gap in the topic: never a letter
        return self._letters.get((partition, offset))

    async def _read(self, partition: int, offset: int) -> list[Found] | None:
        lock = self._partition_locks.setdefault(partition, asyncio.Lock())
        async with lock:
            self.reads += 1
            found = await self._source.read_from(partition, offset)
        for record in found or ():
            self._remember(partition, record.offset, record.fingerprint)
        return found

    def _remember(self, partition: int, offset: int, known: Fingerprint | None) -> None:
        self._letters[(partition, offset)] = known
        self._letters.move_to_end((partition, offset))
        while len(self._letters) > self._remembered:
            self._letters.popitem(last=False)


class KafkaLetters:
    """The dead-letter topic on Kafka: one consumer (in no group) asks for its bounds, and
    one per partition, started when first needed, reads it. ``async with`` starts and stops
    them; Kafka's errors end here (a failed ask or read is None)."""

    def __init__(
        self,
        topic: str,
        consumers: Callable[[], AIOKafkaConsumer],
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self._topic = topic
        self._consumers = consumers
        self._timeout_s = read_timeout_s
        self._index = consumers()
        self._readers: dict[int, AIOKafkaConsumer] = {}

    async def __aenter__(self) -> KafkaLetters:
        await self._index.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for reader in [*self._readers.values(), self._index]:
            await reader.stop()

    async def bounds(self) -> Bounds | None:
        try:
            async with asyncio.timeout(self._timeout_s):
                partitions = await topic_partitions(self._index, self._topic)
                starts = await self._index.beginning_offsets(partitions)
                ends = await self._index.end_offsets(partitions)
        except (KafkaError, TopicMissing, TimeoutError, OSError) as error:
            log.warning("cannot ask for the bounds of %s: %r", self._topic, error)
            return None
        return {tp.partition: (starts[tp], ends[tp]) for tp in partitions}

    async def read_from(self, partition: int, offset: int) -> list[Found] | None:
        """Called for one partition at a time (the lookup's partition lock)."""
        tp = TopicPartition(self._topic, partition)
        try:
            async with asyncio.timeout(self._timeout_s):
                reader = await self._reader(partition)
                reader.seek(tp, offset)
                while True:
                    fetched = await reader.getmany(tp, timeout_ms=int(self._timeout_s * 1000))
                    records = fetched.get(tp)
                    if records:
                        return [Found(r.offset, fingerprint(r.key, r.value)) for r in records]
        except (KafkaError, TimeoutError, OSError) as error:
            log.warning(
                "cannot read dead letter %s:%d:%d: %r", self._topic, partition, offset, error
            )
            return None

    async def _reader(self, partition: int) -> AIOKafkaConsumer:
        reader = self._readers.get(partition)
        if reader is None:
            reader = self._consumers()
            await reader.start()
            self._readers[partition] = reader
            reader.assign([TopicPartition(self._topic, partition)])
        return reader
