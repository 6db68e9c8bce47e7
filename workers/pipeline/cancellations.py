"""Cancelled jobs and batches, as every worker knows them; and batches' caps, handed on.

``headway cancel`` publishes a ControlCommand to ``headway.control``. Every worker reads the
whole (small) control topic from its start, without a consumer group, and stores each command
in the ledger (``cancellations``, an idempotent insert); every worker reloads what is new there
every ``REFRESH_S`` — so a cancel reaches all workers within about that, also workers that
were not running when it was sent, and covers jobs still queued in Kafka whenever they are
fetched. A job found cancelled before it starts ends
``cancelled``; a call already in flight may finish (CONTRACT §5).

Anyone who may write to the control topic may cancel any tenant's jobs and set its batches'
budgets, unless the tenant sets ``require_signed_control`` (or the older
``require_signed_cancels``, which means the same; with its ``signing_secret_env``): then only a
command signed like its jobs (``headway-signature``) is applied, cancels and ``set_budget``
alike. Kafka ACLs decide who may write the topic at all (README, "Control topic").

A ``set_budget`` command (``headway budget set``), handed to
:class:`workers.admission.batch_caps.BatchCaps`, carries when it was set (``at``): of two sets
the later ``at`` wins, whatever order workers read them in. So ``at`` is bounded: at most
:data:`AT_SLACK_S` past the moment it is read, and past its record's timestamp when the record
has one. A command dated beyond is skipped — never clamped: a clamped date would become "now"
again at every re-read of the topic (a restarted worker reads it from its start) and outrank
every set made before. The record's timestamp keeps the decision the same at a later re-read
(exactly so when the control topic's ``message.timestamp.type`` is ``LogAppendTime``).

A command that cannot be read, is not signed as required, is dated too far ahead, or holds a
value the ledger refuses is logged, counted (``headway_control_skipped_total{reason}``) and
skipped: the follower never stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError
from sqlalchemy import select

from broker.errors import LedgerRefused
from broker.headers import RecordHeaders
from broker.kafka import require_bootstrap, topic_partitions
from broker.settings import Settings
from schemas.control import ControlCommand
from workers.admission.batch_caps import BatchCaps
from workers.intake.undecodable import UNDECODABLE, Batches, StepPast
from workers.ledger.database.models import CancellationRow
from workers.ledger.database.statements import dialect_insert
from workers.ledger.database.transactions import Connection, Transact

log = logging.getLogger(__name__)

REFRESH_S = 2.0  # commands from the control topic apply at once; this catches the rest
RETRY_S = 1.0
CLOCK_SLACK_S = 5.0  # re-read this far back: workers' clocks and commits are not instant
#: how far past the moment it is read (and its record's timestamp) a set_budget may be dated:
#: the clock skew tolerated between the operator's machine and the workers
AT_SLACK_S = 60.0

Key = tuple[str, str]


async def _store(conn: Connection, values: dict[str, Any]) -> None:
    insert = dialect_insert(conn)(CancellationRow).values(**values)
    await conn.execute(insert.on_conflict_do_nothing())


async def _rows(conn: Connection, statement: Any) -> list[tuple[str, str, str]]:
    return [(tenant, scope, target) for tenant, scope, target in await conn.execute(statement)]


#: why a command may not act for its tenant (None: it may)
Authenticate = Callable[[ControlCommand, bytes, RecordHeaders], str | None]


def _anyone(command: ControlCommand, value: bytes, headers: RecordHeaders) -> str | None:
    return None


def _uncounted(reason: str) -> None:
    return None


class Cancellations:
    def __init__(
        self,
        run: Transact,
        clock: Callable[[], float] = time.time,
        authenticate: Authenticate = _anyone,
        caps: BatchCaps | None = None,
        skipped: Callable[[str], None] = _uncounted,
    ) -> None:
        """``run``: runs ledger work in a transaction (``LedgerWriter.run``);
        ``authenticate``: whether a command's record may act for its tenant; ``caps``: where
        ``set_budget`` commands go (None: they are logged and skipped); ``skipped``: counts a
        skipped command by reason (the metric)."""
        self._run = run
        self._caps = caps
        self._skipped = skipped
        self._clock = clock
        self._authenticate = authenticate
        self._next: dict[TopicPartition, int] = {}
        self._jobs: set[Key] = set()
        self._batches: set[Key] = set()
        self._seen_up_to = 0.0

    def is_cancelled(self, tenant: str, job_id: str, batch_id: str | None) -> bool:
        if (tenant, job_id) in self._jobs:
            return True
        return batch_id is not None and (tenant, batch_id) in self._batches

    async def record(self, command: ControlCommand) -> None:
        """Store a command (idempotent) and apply it here at once."""
        if command.action == "set_budget":
            if self._caps is not None:
                await self._caps.set(command)
            return
        scope, target = _scope(command)
        values: dict[str, Any] = {
            "tenant": command.tenant,
            "scope": scope,
            "target": target,
            "created_at": self._clock(),
        }
        await self._run(lambda conn: _store(conn, values))
        self._add(command.tenant, scope, target)

    async def refresh(self) -> None:
        """Load the commands stored since the last refresh (by any worker)."""
        since = self._seen_up_to - CLOCK_SLACK_S
        now = self._clock()
        statement = select(
            CancellationRow.tenant, CancellationRow.scope, CancellationRow.target
        ).where(CancellationRow.created_at >= since)
        rows: list[tuple[str, str, str]] = await self._run(lambda conn: _rows(conn, statement))
        for tenant, scope, target in rows:
            self._add(tenant, scope, target)
        self._seen_up_to = now

    async def follow(self, control: AIOKafkaConsumer) -> None:
        """Store each command of the control topic in the ledger. A command the ledger cannot
        take yet is retried, never skipped; a record that cannot be decoded is stepped past."""
        step_past = StepPast(control, self._next, self._apply_all, self._skip_undecodable)
        while True:
            try:
                batches = await control.getmany(timeout_ms=500)
            except UNDECODABLE as error:
                log.warning("control: a fetch failed on an undecodable record: %s", error)
                if not await step_past.recover(sorted(control.assignment())):
                    await asyncio.sleep(RETRY_S)
                continue
            await self._apply_all(batches)

    async def _apply_all(self, batches: Batches) -> None:
        for tp, records in batches.items():
            for record in records:
                await self._apply(record)
                self._next[tp] = record.offset + 1

    async def _apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        value = record.value or b""
        try:
            command = ControlCommand.model_validate_json(value)
        except ValidationError as error:
            log.warning(
                "control: ignoring unreadable command at offset %d: %s", record.offset, error
            )
            self._skipped("unreadable")
            return
        refused = self._authenticate(command, value, record.headers)
        if refused is not None:
            log.warning("control: ignoring a command at offset %d: %s", record.offset, refused)
            self._skipped("unauthenticated")
            return
        latest = self._latest_at(record.timestamp)
        if command.at is not None and command.at.timestamp() > latest:
            log.warning(
                "control: ignoring a %s at offset %d dated %s, ahead of %s (the time it was "
                "read, or its record's timestamp, + %.0f s)",
                command.action, record.offset, command.at.isoformat(),
                datetime.fromtimestamp(latest, UTC).isoformat(), AT_SLACK_S,
            )  # fmt: skip
            self._skipped("future_at")
            return
        while True:
            try:
                await self.record(command)
            except LedgerRefused as error:  # its values, not the ledger: no retry can help
                log.warning("control: ignoring a command at offset %d: %s", record.offset, error)
                self._skipped("ledger_refused")
                return
            except Exception as error:  # the ledger is away: keep the command, try again
                log.warning("control: cannot store a command yet: %s", error)
                await asyncio.sleep(RETRY_S)
            else:
                log.info("control: %s", command.model_dump_json(exclude_none=True))
                return

    async def _skip_undecodable(self, tp: TopicPartition, offset: int, error: Exception) -> None:
        """Step past it for good: the next record is the first not taken (a later rewind must
        not come back to it — consecutive undecodable records once pinned the follower)."""
        log.warning("control: skipping the undecodable record at offset %d of %s", offset, tp)
        self._skipped("undecodable")
        self._next[tp] = offset + 1

    def _latest_at(self, timestamp_ms: int | None) -> float:
        """The latest ``at`` a command read now may carry."""
        latest = self._clock()
        if timestamp_ms is not None and timestamp_ms >= 0:
            latest = min(latest, timestamp_ms / 1000)
        return latest + AT_SLACK_S

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.refresh()
            except Exception as error:
                log.warning("cancellations refresh failed: %s", error)

    def _add(self, tenant: str, scope: str, target: str) -> None:
        (self._jobs if scope == "job" else self._batches).add((tenant, target))


def _scope(command: ControlCommand) -> tuple[str, str]:
    if command.job_id is not None:
        return "job", command.job_id
    assert command.batch_id is not None  # the model guarantees one of the two
    return "batch", command.batch_id


async def open_control_reader(settings: Settings) -> AIOKafkaConsumer:
    """A consumer of every partition of the control topic, from its beginning, in no group."""
    topic = settings.topics.control
    reader = AIOKafkaConsumer(
        bootstrap_servers=require_bootstrap(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await reader.start()
    try:
        reader.assign(await topic_partitions(reader, topic))
    except BaseException:
        await reader.stop()
        raise
    return reader
