"""Telling a replay by ``headway dlq replay`` from a producer's forged ``headway-replay``.

A replayed job may run again although its stored result is ``failed`` or ``rejected``; any
producer can write the header, so on its own it proves nothing. The header names the dead
letter replayed (``<dlq partition>:<dlq offset>``), and only workers write the dead-letter
topic: a replay is genuine when that dead letter holds the record's very key and value. The
dead letter is looked up by :class:`~broker.dlq_lookup.LetterLookup` — a position past the
topic's end or in a partition it does not have is answered at once, without a read — and a
header naming anything else is ignored (the job is an ordinary redelivery, answered from the
ledger) and logged.

The worker checks a job's header before a runner runs it (:mod:`workers.intake.replay_holds`),
so no check ever holds a runner.
"""

from __future__ import annotations

import logging
import re

from aiokafka import ConsumerRecord

from broker.dlq_lookup import LetterLookup, fingerprint
from broker.headers import header_text
from broker.topics import HEADER_REPLAY

log = logging.getLogger(__name__)

_DIGITS = re.compile(r"[0-9]+")


class ReplayCheck:
    """``await check.genuine(record)``: whether the record is a replay ``headway dlq replay``
    made."""

    def __init__(self, lookup: LetterLookup, dlq: str) -> None:
        self._lookup = lookup
        self._dlq = dlq
        self.forged = 0  # replay headers that named no matching dead letter

    async def genuine(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        named = _position(header_text(record.headers, HEADER_REPLAY))
        if named is None:
            return False
        letter = await self._lookup.letter(*named)
        if letter is not None and letter == fingerprint(record.key, record.value):
            return True
        self.forged += 1
        log.warning(
            "ignoring a headway-replay header naming %s:%d:%d: no such dead letter holds this "
            "record's bytes (a replay only `headway dlq replay` can make)",
            self._dlq,
            *named,
        )
        return False


def _position(text: str) -> tuple[int, int] | None:
    partition, _, offset = text.partition(":")
    if len(text) > 40 or not all(_DIGITS.fullmatch(part) for part in (partition, offset)):
        return None  # ASCII digits only: str.isdigit() takes "²", which int() refuses
    return int(partition), int(offset)
