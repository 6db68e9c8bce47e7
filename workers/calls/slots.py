"""A worker's provider-call slots: how many jobs may be *in doubt* at once.

A job is in doubt from just before its first provider call until the ledger holds its result:
if the worker dies in between, another worker calls the provider again. A job takes a slot
before it calls and gives it back as soon as its result is stored (publishing comes after), so
a crash repeats at most ``HEADWAY_CONCURRENCY`` calls — however many more jobs the worker is
preparing meanwhile (intake, claim, admission: ``HEADWAY_PIPELINE_RUNNERS``), which wait for a
slot without holding one. A job served from the response cache takes none.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class CallSlot:
    """One job's hold on a slot, given back once (when stored, or on leaving the block)."""

    __slots__ = ("_held", "_semaphore")

    def __init__(self, semaphore: asyncio.Semaphore | None) -> None:
        self._semaphore = semaphore
        self._held = False

    async def __aenter__(self) -> CallSlot:
        if self._semaphore is not None:
            await self._semaphore.acquire()
            self._held = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def release(self) -> None:
        if self._held:
            self._held = False
            assert self._semaphore is not None
            self._semaphore.release()


class CallSlots:
    def __init__(self, size: int) -> None:
        self._semaphore = asyncio.Semaphore(size)

    def take(self) -> CallSlot:
        """``async with slots.take() as slot:`` — waits for a free slot."""
        return CallSlot(self._semaphore)

    @staticmethod
    def none() -> CallSlot:
        """A stand-in for a job that calls no provider."""
        return CallSlot(None)
