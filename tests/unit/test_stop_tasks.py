"""A drain stops its background tasks even when one swallows its cancel: Python 3.11's
``asyncio.wait_for`` loses a cancel that arrives as its inner call ends, and a drain that
waited on such a task once hung a worker's shutdown for ever."""

from __future__ import annotations

import asyncio

import pytest

from workers.runtime import worker as runtime
from workers.runtime.worker import stop_tasks


async def test_a_task_that_swallows_its_first_cancel_is_cancelled_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "CANCEL_AGAIN_S", 0.05)
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # as a lost cancel looks to the task: it carries on

    async def obedient() -> None:
        await asyncio.sleep(3600)

    tasks = [asyncio.create_task(stubborn()), asyncio.create_task(obedient())]
    await asyncio.sleep(0)
    async with asyncio.timeout(2):
        await stop_tasks(tasks)
    assert swallowed == 1 and all(task.cancelled() for task in tasks)


async def test_a_task_that_failed_is_stopped_without_raising() -> None:
    async def fails() -> None:
        raise RuntimeError("its own trouble")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await stop_tasks([task])
    assert task.done() and isinstance(task.exception(), RuntimeError)
