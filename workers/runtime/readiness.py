"""Whether a worker can take work: its ledger and Kafka reachable, and not draining.

The ledger writer reports each transaction's outcome here. While the database is unreachable
the worker stops taking jobs from its buffer (runners wait on :meth:`Readiness.ledger_up`),
stops committing offsets, and ``/readyz`` answers 503; the first transaction that succeeds
again (a job's retried write or the worker's probe) reopens it. Nothing in flight is dropped:
jobs already running wait in their ledger retry loop and finish when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Check:
    ok: bool = True
    since: float = 0.0  # time.time() of the last change
    error: str | None = None  # the error's kind only: its text (SQL, hosts) stays in the logs


class Readiness:
    """The worker's readiness, as ``/readyz`` reports it."""

    def __init__(self) -> None:
        self._ledger = _Check(since=time.time())
        self._kafka = _Check(since=time.time())
        self._ledger_up = asyncio.Event()
        self._ledger_up.set()
        self.draining = False

    # -- the ledger ---------------------------------------------------------------------------

    def ledger_ok(self) -> None:
        if not self._ledger.ok:
            log.warning("ledger reachable again after %.1fs", time.time() - self._ledger.since)
            self._ledger = _Check(since=time.time())
            self._ledger_up.set()

    def ledger_failed(self, error: BaseException) -> None:
        if self._ledger.ok:
            log.error("ledger unreachable, not taking new jobs: %s", error)
            self._ledger = _Check(ok=False, since=time.time())
            self._ledger_up.clear()
        self._ledger.error = type(error).__name__

    @property
    def ledger_is_up(self) -> bool:
        return self._ledger.ok

    async def ledger_up(self) -> None:
        """Return once the ledger is reachable (at once when it is)."""
        await self._ledger_up.wait()

    # -- Kafka --------------------------------------------------------------------------------

    def kafka_checked(self, error: BaseException | None) -> None:
        ok = error is None
        if ok != self._kafka.ok:
            (log.warning if ok else log.error)("kafka %s", "reachable" if ok else f"down: {error}")
            self._kafka = _Check(ok=ok, since=time.time())
        self._kafka.error = None if error is None else type(error).__name__

    # -- the report ---------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ledger.ok and self._kafka.ok and not self.draining

    def report(self) -> dict[str, Any]:
        def check(c: _Check) -> dict[str, Any]:
            return {"ok": c.ok, "since": round(c.since, 3), "error": c.error}

        return {
            "ready": self.ready,
            "draining": self.draining,
            "ledger": check(self._ledger),
            "kafka": check(self._kafka),
        }


async def watch_ledger(
    readiness: Readiness, probe: Callable[[], Awaitable[None]], interval_s: float
) -> None:
    """While the ledger is down, ask it again every ``interval_s`` (no job may be left to)."""
    while True:
        await asyncio.sleep(interval_s)
        if not readiness.ledger_is_up:
            with contextlib.suppress(Exception):  # the failure is recorded by the writer
                await probe()


async def watch_kafka(
    readiness: Readiness, check: Callable[[], Awaitable[object]], interval_s: float
) -> None:
    """Ask the cluster for its metadata every ``interval_s``; an answer means reachable.

    ``asyncio.timeout``, not ``asyncio.wait_for``: on Python 3.11 a ``wait_for`` whose inner
    call ends just as the task is cancelled loses the cancel, and a drain waiting for this task
    then waits for ever (seen once in the suite: a worker that never finished shutting down)."""
    while True:
        try:
            async with asyncio.timeout(interval_s):
                await check()
        except Exception as error:
            readiness.kafka_checked(error)
        else:
            readiness.kafka_checked(None)
        await asyncio.sleep(interval_s)
