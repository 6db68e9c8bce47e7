"""Worker-added latency: what a worker adds to a job beyond the provider call.

Jobs arrive at a steady rate well below what one worker sustains (default 500/s), so nothing
waits for a slot; the simulator answers at once. Per job: from the moment a runner takes it
from the worker's buffer until its result and usage event are acknowledged by Kafka
(``JobPipeline.handle``), minus the time inside the provider call (``Executor.execute``).
Both are timed by wrapping those methods in this process, paired through a context variable
(the call runs in the job's own task). Targets (issue 8): p50 < 2 ms, p99 < 20 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bench.common import Stack, chat_jobs, wait_for
from bench.relay import relay
from broker.admin import create_topics
from broker.client import HeadwayClient
from broker.kafka import consumer_options
from schemas.jobs import Priority
from tests.helpers import running_worker
from workers.calls.executor import Executor
from workers.ledger.database.engine import upgrade
from workers.pipeline.job_pipeline import JobPipeline

_calls: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("calls", default=None)


@dataclass
class Added:
    jobs: int
    p50_ms: float
    p99_ms: float
    call_p50_ms: float


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@contextlib.contextmanager
def _timed(added: list[float], calls: list[float]) -> Iterator[None]:
    """Wrap the two methods for the duration of one measurement."""
    handle, execute = JobPipeline.handle, Executor.execute

    async def timed_handle(self: JobPipeline, *args: Any, **kwargs: Any) -> Any:
        inside: list[float] = []
        token = _calls.set(inside)
        started = time.perf_counter()
        try:
            return await handle(self, *args, **kwargs)
        finally:
            _calls.reset(token)
            if inside:  # a job that reached a provider
                added.append(time.perf_counter() - started - sum(inside))
                calls.extend(inside)

    async def timed_execute(self: Executor, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await execute(self, *args, **kwargs)
        finally:
            inside = _calls.get()
            if inside is not None:
                inside.append(time.perf_counter() - started)

    JobPipeline.handle = timed_handle  # type: ignore[method-assign]
    Executor.execute = timed_execute  # type: ignore[method-assign]
    try:
        yield
    finally:
        JobPipeline.handle = handle  # type: ignore[method-assign]
        Executor.execute = execute  # type: ignore[method-assign]


async def _submit_steadily(
    client: HeadwayClient, jobs: list[dict[str, Any]], rate: int, tick: float = 0.02
) -> None:
    """``rate`` jobs a second, ``rate * tick`` at a time (10 every 20 ms at 500/s)."""
    per_tick = max(1, int(rate * tick))
    started = time.perf_counter()
    for i in range(0, len(jobs), per_tick):
        await client.submit_many(jobs[i : i + per_tick])
        next_at = started + (i // per_tick + 1) * tick
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))


def _summary(added: list[float], calls: list[float]) -> Added:
    return Added(
        len(added),
        _percentile(added, 0.5) * 1000,
        _percentile(added, 0.99) * 1000,
        statistics.median(calls) * 1000 if calls else 0.0,
    )


async def worker_added_latency(
    stack: Stack, rate: int = 500, seconds: float = 10.0, **overrides: Any
) -> Added:
    settings = stack.settings(**overrides)
    config = stack.config()
    await upgrade(settings.database_url)
    await create_topics(settings, config)
    jobs = list(chat_jobs(int(rate * seconds), tag="lat"))
    added: list[float] = []
    calls: list[float] = []
    with _timed(added, calls):
        async with running_worker(settings, config) as worker, HeadwayClient(settings) as client:
            await _submit_steadily(client, jobs, rate)
            await wait_for(lambda: worker.processed >= len(jobs), 120)
    return _summary(added, calls)


async def relay_added_latency(stack: Stack, rate: int = 500, seconds: float = 10.0) -> Added:
    """The naive relay (bench/relay.py) under the same arrivals: from taking a record until
    its result is acknowledged, minus the provider call. Its producer does not linger and its
    consumer long-polls as briefly as a headway worker's: the lowest latency it can have."""
    settings = stack.settings()
    await create_topics(settings, stack.config())
    jobs = list(chat_jobs(int(rate * seconds), tag="lat"))
    added: list[float] = []
    ready = asyncio.Event()
    relaying = asyncio.create_task(
        relay(
            stack.bootstrap,
            settings.topics.jobs(Priority.NORMAL),
            settings.topics.results,
            stack.simulator_url,
            256,
            len(jobs),
            f"{settings.topic_prefix}-relay",
            added=added,
            linger_ms=0,
            fetch_max_wait_ms=consumer_options(settings)["fetch_max_wait_ms"],
            ready=ready,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 60)  # as a headway worker has its partitions
        async with HeadwayClient(settings) as client:
            await _submit_steadily(client, jobs, rate)
        await asyncio.wait_for(asyncio.shield(relaying), 120)
    finally:
        relaying.cancel()
    return _summary(added, [])


if __name__ == "__main__":
    from bench.common import stack

    async def main() -> None:
        async with stack() as st:
            for _ in range(2):
                print("headway", await worker_added_latency(st))
                print("relay  ", await relay_added_latency(st))

    asyncio.run(main())
