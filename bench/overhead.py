"""(a) Full pipeline vs the naive relay: same backlog, same concurrency, simulator at 0 ms."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench.common import Stack, chat_jobs, preload, wait_for
from bench.relay import relay
from schemas.jobs import Priority
from tests.helpers import running_worker


@dataclass
class Rates:
    headway: float
    relay: float

    @property
    def ratio(self) -> float:
        return self.headway / self.relay


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


async def measure(stack: Stack, jobs: int, concurrency: int, runs: int) -> list[Rates]:
    rates = []
    for run in range(runs):
        # alternate the order so neither side always runs on a warmer machine
        if run % 2 == 0:
            h = await headway_rate(stack, jobs, concurrency)
            r = await relay_rate(stack, jobs, concurrency)
        else:
            r = await relay_rate(stack, jobs, concurrency)
            h = await headway_rate(stack, jobs, concurrency)
        rates.append(Rates(h, r))
        print(f"  run {run + 1}: headway {h:,.0f} jobs/s, relay {r:,.0f} jobs/s, ratio {h / r:.2f}")
    return rates


if __name__ == "__main__":
    import sys

    from bench.common import stack

    async def main() -> None:
        async with stack() as st:
            started = time.time()
            await measure(st, int(sys.argv[1]) if len(sys.argv) > 1 else 10_000, 256, 1)
            print(f"took {time.time() - started:.0f}s")

    asyncio.run(main())
