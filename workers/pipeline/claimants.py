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

Key = tuple[str, str]  # (tenant, job_id)


class Claimants:
    """``await claimants.enter(key)`` … ``claimants.leave(key)`` around claim, run, finish."""

    def __init__(self) -> None:
        # a key is busy while present; its event is made only when a duplicate has to wait
        self._busy: dict[Key, asyncio.Event | None] = {}

    def __len__(self) -> int:
        return len(self._busy)

    async def enter(self, key: Key) -> None:
        """Return once no other runner of this process holds ``key``; then hold it."""
        while key in self._busy:
            done = self._busy[key]
            if done is None:
                done = self._busy[key] = asyncio.Event()
            await done.wait()
        self._busy[key] = None

    def leave(self, key: Key) -> None:
        done = self._busy.pop(key, None)
        if done is not None:
            done.set()
