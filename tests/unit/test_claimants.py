"""Inside one worker a job is claimed by one runner at a time; duplicates wait their turn in
memory and other jobs are never held up."""

from __future__ import annotations

import asyncio

from workers.pipeline.claimants import Claimants


async def test_duplicates_of_a_job_take_turns_and_other_jobs_do_not_wait() -> None:
    claimants = Claimants()
    order: list[str] = []

    async def run(name: str, key: tuple[str, str], hold_s: float) -> None:
        await claimants.enter(key)
        try:
            order.append(f"{name} in")
            await asyncio.sleep(hold_s)
            order.append(f"{name} out")
        finally:
            claimants.leave(key)

    dup = ("acme", "j1")
    await asyncio.gather(
        run("first", dup, 0.05),
        run("second", dup, 0.01),
        run("third", dup, 0.01),
        run("other", ("acme", "j2"), 0.0),
    )
    assert order[:2] == ["first in", "other in"]
    holders = [entry for entry in order if not entry.startswith("other")]
    # never two copies inside at once
    assert holders == ["first in", "first out", "second in", "second out", "third in", "third out"]
    assert len(claimants) == 0


async def test_a_cancelled_waiter_leaves_no_trace() -> None:
    claimants = Claimants()
    key = ("acme", "j1")
    await claimants.enter(key)
    waiter = asyncio.create_task(claimants.enter(key))
    await asyncio.sleep(0)
    waiter.cancel()
    claimants.leave(key)
    await asyncio.gather(waiter, return_exceptions=True)
    await asyncio.wait_for(claimants.enter(key), 1)  # free again
    claimants.leave(key)
    assert len(claimants) == 0
