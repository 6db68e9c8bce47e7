"""One claimant per job inside a worker process.

The same job can sit in a worker's buffer twice (a producer retried, a backfill was re-run).
Only one runner at a time may claim and run it; a duplicate waits here, without asking the
database, until the first copy is done, and then finds its stored result. The rule lets the
ledger treat a running row held by this worker's own lease as an orphan (a claim that
committed although its answer was lost when the connection broke) and take it over at once,
instead of waiting for a lease the worker itself keeps renewing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

Key = tuple[str, str]  # (tenant, job_id)


class Claimants:
    """``async with claimants.sole(key): claim, run, finish``."""

    def __init__(self) -> None:
        self._busy: dict[Key, asyncio.Event] = {}

    def __len__(self) -> int:
        return len(self._busy)

    @contextlib.asynccontextmanager
    async def sole(self, key: Key) -> AsyncIterator[None]:
        while (busy := self._busy.get(key)) is not None:
            await busy.wait()
        done = self._busy[key] = asyncio.Event()
        try:
            yield
        finally:
            del self._busy[key]
            done.set()
