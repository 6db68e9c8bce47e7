"""Shared pieces of the benchmarks: the embedded stack, job preloading, timing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from broker.admin import create_topics
from broker.client import HeadwayClient
from broker.config import HeadwayConfig, development_config
from broker.embedded import EmbeddedKafka, free_port
from broker.settings import Settings
from workers.devstack.simulator.run import simulator_process
from workers.ledger.database.engine import upgrade


@dataclass
class Stack:
    bootstrap: str
    simulator_url: str
    workdir: str

    def settings(self, **overrides: Any) -> Settings:
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        values: dict[str, Any] = {
            "kafka_bootstrap": self.bootstrap,
            "topic_prefix": prefix,
            "consumer_group": f"{prefix}-workers",
            "database_url": f"sqlite+aiosqlite:///{self.workdir}/{prefix}.db",
            "session_timeout_ms": 6000,
        }
        values.update(overrides)
        return Settings(**values)

    def config(self) -> HeadwayConfig:
        return development_config(self.simulator_url)


@contextlib.asynccontextmanager
async def stack(latency_ms: float = 0.0, rpm: int | None = None) -> AsyncIterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="headway-bench-") as workdir:
        async with EmbeddedKafka() as kafka:
            with simulator_process(free_port(), latency_ms=latency_ms, rpm=rpm) as url:
                yield Stack(kafka.bootstrap, url, workdir)


def chat_jobs(count: int, tag: str = "b") -> Iterator[dict[str, Any]]:
    for i in range(count):
        yield {
            "job_id": f"{tag}-{i}",
            "tenant": "demo",
            "kind": "chat",
            "route": "summarize",
            "messages": [
                {"role": "user", "content": f"Summarise the benchmark document number {i}."}
            ],
            "params": {"max_tokens": 16},
        }


async def preload(settings: Settings, config: HeadwayConfig, jobs: Iterator[dict[str, Any]]) -> int:
    await upgrade(settings.database_url)
    await create_topics(settings, config)
    async with HeadwayClient(settings) as client:
        total = 0
        chunk: list[dict[str, Any]] = []
        for job in jobs:
            chunk.append(job)
            if len(chunk) == 20_000:
                total += await client.submit_many(chunk)
                chunk = []
        total += await client.submit_many(chunk)
        return total


async def wait_for(predicate: Any, timeout_s: float, interval_s: float = 0.005) -> float:
    """Poll until predicate() is true; returns the time.perf_counter() at which it was seen."""
    deadline = time.perf_counter() + timeout_s
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError("benchmark condition not reached")
        await asyncio.sleep(interval_s)
    return time.perf_counter()


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), "
        f"{memory:.0f} GiB, Python {platform.python_version()}"
    )


@dataclass
class Rates:
    """One run of headway beside the thing it is compared with (jobs/s each)."""

    headway: float
    other: float

    @property
    def ratio(self) -> float:
        return self.headway / self.other


async def side_by_side(
    runs: int,
    headway: Callable[[], Awaitable[float]],
    other: Callable[[], Awaitable[float]],
    other_name: str,
) -> list[Rates]:
    """Run both ``runs`` times, alternating which goes first so neither side always runs on
    a warmer machine."""
    rates = []
    for run in range(runs):
        if run % 2 == 0:
            h = await headway()
            o = await other()
        else:
            o = await other()
            h = await headway()
        rates.append(Rates(h, o))
        print(f"  run {run + 1}: headway {h:,.0f} jobs/s, {other_name} {o:,.0f}, ratio {h / o:.2f}")
    return rates
