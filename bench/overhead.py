"""(a) Full pipeline vs the naive relay: same backlog, same concurrency, simulator at 0 ms."""

from __future__ import annotations

import asyncio
import time

from bench.common import Rates, Stack, chat_jobs, preload, side_by_side, wait_for
from bench.relay import relay
from schemas.jobs import Priority
from tests.helpers import running_worker
from workers.runtime.gc_tuning import tuned_gc


async def headway_rate(stack: Stack, jobs: int, concurrency: int) -> float:
    settings = stack.settings(concurrency=concurrency)
    config = stack.config()
    await preload(settings, config, chat_jobs(jobs))
    async with running_worker(settings, config) as worker:
        first = await wait_for(lambda: worker.processed >= 1, 60)
        last = await wait_for(lambda: worker.processed >= jobs, 600)
    return (jobs - 1) / (last - first)


async def relay_rate(stack: Stack, jobs: int, concurrency: int) -> float:
    settings = stack.settings()
    await preload(settings, stack.config(), chat_jobs(jobs))
    _, first, last = await relay(
        stack.bootstrap,
        settings.topics.jobs(Priority.NORMAL),
        settings.topics.results,
        stack.simulator_url,
        concurrency,
        jobs,
        f"{settings.topic_prefix}-relay",
    )
    return (jobs - 1) / (last - first)


async def tuned_relay_rate(stack: Stack, jobs: int, concurrency: int) -> float:
    """The relay under the garbage-collector tuning a headway worker applies to itself
    (``workers/runtime/gc_tuning.py``): how much of the ratio that tuning explains."""
    with tuned_gc(stack.settings().gc_threshold):  # what headway_rate's worker applies
        return await relay_rate(stack, jobs, concurrency)


async def measure(stack: Stack, jobs: int, concurrency: int, runs: int) -> list[Rates]:
    return await side_by_side(
        runs,
        lambda: headway_rate(stack, jobs, concurrency),
        lambda: relay_rate(stack, jobs, concurrency),
        "relay",
    )


if __name__ == "__main__":
    import sys

    from bench.common import stack

    async def main() -> None:
        async with stack() as st:
            started = time.time()
            await measure(st, int(sys.argv[1]) if len(sys.argv) > 1 else 10_000, 256, 1)
            print(f"took {time.time() - started:.0f}s")

    asyncio.run(main())
