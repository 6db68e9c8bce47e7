"""Issue 21's figures: fair service in one lane, across worker processes, on PostgreSQL.

(f3) Tenant A's backlog (20,000 or 1,000,000 normal jobs) is published and read into the
     ledger by 1 or 3 ``headway worker`` processes (simulator at 200 ms, concurrency 64 each);
     tenant B then submits 20 normal jobs. Figures: how long reading A's backlog took, B's
     wait from submission until its 20 results are stored, A's jobs/s in the 5 s before B and
     in the 5 s from B's submission, and the workers' peak RSS.
(f4) Two heavy tenants of weights 3 and 1 in one lane, three workers: jobs finished per tenant
     in each 10 s of a minute once the backlogs are in the ledger.
(f5) bench (a)'s workload with spilling on and off (``HEADWAY_BUFFER_SPILL``), beside the relay.

python -m bench.same_lane [--backlog N] [--workers K]   # one (f3) run
python -m bench.same_lane --sections [--runs R]          # (f3)–(f5), as make bench writes them
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.common import chat_jobs, preload, stack, wait_for
from bench.fairness import tenant_jobs
from bench.memory import rss_mb
from bench.overhead import relay_rate
from bench.tenancy import fresh_postgres
from broker.admin import create_topics
from broker.client import HeadwayClient
from broker.config import load_config
from broker.embedded import EmbeddedKafka
from broker.settings import Settings
from tests.chaos.processes import spawn_worker
from tests.helpers import running_worker
from workers.devstack.simulator import SimulatorConfig, SimulatorServer
from workers.ledger.database.engine import create_engine
from workers.ledger.database.models import FairShareRow, JobRow
from workers.ledger.queries import batch_status

SMALL = 20
PUBLISH_CHUNK = 20_000
WINDOW_S = 5.0  # A's rate is measured over this long before B, and from B's submission


def jobs_of(tenant: str, count: int, batch: str) -> Iterator[dict[str, Any]]:
    return tenant_jobs(tenant, count, "normal", batch)


@dataclass
class Fleet:
    settings: Settings
    processes: list[Any]
    peak_rss_mb: float = 0.0
    simulator_url: str = ""

    def sample(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                self.peak_rss_mb = max(self.peak_rss_mb, rss_mb(process.pid))


@contextlib.asynccontextmanager
async def fleet(
    workers: int,
    tenants: str,
    latency_ms: float,
    concurrency: int,
    *,
    deployment: str = "",
    simulator_rpm: int | None = None,
    **env: str,
) -> AsyncIterator[Fleet]:
    """``workers`` worker processes on a fresh PostgreSQL database and the embedded broker;
    ``deployment``: more TOML lines of the one deployment (e.g. its ``rpm``), ``simulator_rpm``:
    what the simulator enforces per sliding minute."""
    workdir = Path(tempfile.mkdtemp(prefix="headway-bench-lane-"))
    simulator = SimulatorServer(SimulatorConfig(seed=5, latency_ms=latency_ms, rpm=simulator_rpm))
    async with EmbeddedKafka() as kafka, fresh_postgres() as url, simulator as sim:
        config = workdir / "headway.toml"
        config.write_text(
            f'[providers.sim]\ntype = "simulator"\nbase_url = "{sim.base_url}"\n'
            '[routes.summarize]\nkind = "chat"\n'
            '[[routes.summarize.deployments]]\nprovider = "sim"\nmodel = "sim-chat"\n'
            f"{deployment}{tenants}"
        )
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        settings = Settings(
            kafka_bootstrap=kafka.bootstrap,
            database_url=url,
            topic_prefix=prefix,
            consumer_group=f"{prefix}-workers",
            config=config,
            concurrency=concurrency,
            session_timeout_ms=6000,
            job_partitions=4,
        )
        await create_topics(settings, load_config(config))
        with _environment(env):
            processes = [spawn_worker(settings) for _ in range(workers)]
        running = Fleet(settings, processes, simulator_url=sim.base_url)
        sampler = asyncio.create_task(_sample_forever(running))
        try:
            await asyncio.sleep(3 + workers)  # every worker joins the group first
            yield running
        finally:
            sampler.cancel()
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait(120)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    import os

    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def _sample_forever(running: Fleet) -> None:
    while True:
        running.sample()
        await asyncio.sleep(0.5)


async def publish(settings: Settings, jobs: Iterator[dict[str, Any]]) -> None:
    async with HeadwayClient(settings) as client:
        chunk: list[dict[str, Any]] = []
        for job in jobs:
            chunk.append(job)
            if len(chunk) == PUBLISH_CHUNK:
                await client.submit_many(chunk)
                chunk.clear()
        if chunk:
            await client.submit_many(chunk)


async def until_in_ledger(engine: Any, total: int, timeout_s: float = 900) -> None:
    """Until the ledger holds ``total`` jobs: spilled and waiting, or claimed."""
    for _ in range(int(timeout_s)):
        async with engine.connect() as conn:
            waiting = await conn.scalar(select(func.coalesce(func.sum(FairShareRow.waiting), 0)))
            rows = await conn.scalar(select(func.count()).select_from(JobRow))
        if int(waiting or 0) + int(rows or 0) >= total:
            return
        await asyncio.sleep(1.0)
    raise TimeoutError(f"the ledger never held {total} jobs")


async def finished_of(engine: Any, batch: str) -> int:
    async with engine.connect() as conn:
        found = await conn.scalar(
            select(func.count()).where(JobRow.batch_id == batch, JobRow.status != "running")
        )
    return int(found or 0)


async def _b_done_at(engine: Any) -> float:
    """When B's 20 results were stored (polled every 50 ms)."""
    while True:
        if (await batch_status(engine, "b")).finished >= SMALL:
            return time.monotonic()
        await asyncio.sleep(0.05)


@dataclass
class BehindBacklog:
    backlog: int
    workers: int
    read_past_s: float  # from the first of A's records published until the ledger held A's
    b_wait_s: float  # from B's submission until its 20 results were stored
    a_rate_before: float  # A's jobs/s in the WINDOW_S before B's submission
    a_rate_with_b: float  # A's jobs/s in the WINDOW_S from B's submission
    peak_rss_mb: float
    a_left: int  # A's jobs not finished at the end: the windows were inside A's backlog
    a_rate_alone: float | None = None  # the same window of a paired run where B submits nothing

    @property
    def ratio(self) -> float:
        """A's rate beside B against A alone: the paired run's, else the window before B."""
        alone = self.a_rate_alone if self.a_rate_alone is not None else self.a_rate_before
        return self.a_rate_with_b / max(alone, 1e-9)


async def paired(backlog: int, workers: int, run: int) -> BehindBacklog:
    """A run with B and a run where B submits nothing (order alternating by ``run``): A's
    rate in the same window of each, so a trend of A's own through its backlog cancels out."""
    if run % 2 == 0:
        with_b = await behind_backlog(backlog, workers)
        alone = await behind_backlog(backlog, workers, small=0)
    else:
        alone = await behind_backlog(backlog, workers, small=0)
        with_b = await behind_backlog(backlog, workers)
    return dataclasses.replace(with_b, a_rate_alone=alone.a_rate_with_b)


async def behind_backlog(backlog: int, workers: int, small: int = SMALL) -> BehindBacklog:
    tenants = "[tenants.a]\n[tenants.b]\n"
    async with fleet(workers, tenants, latency_ms=200, concurrency=64) as running:
        engine = create_engine(running.settings.database_url)
        watching: asyncio.Task[float] | None = None
        try:
            started = time.monotonic()
            await publish(running.settings, jobs_of("a", backlog, "a"))
            slack = workers * 2 * 4096 // 3  # what the buffers may hold in memory
            await until_in_ledger(engine, backlog - slack)
            read_past = time.monotonic() - started
            # B's progress is polled in both windows, so the polling costs A the same in each
            watching = asyncio.create_task(_b_done_at(engine))
            before = await finished_of(engine, "a")
            await asyncio.sleep(WINDOW_S)
            a_before = (await finished_of(engine, "a") - before) / WINDOW_S
            submitted = time.monotonic()
            at_b = await finished_of(engine, "a")
            b_wait = float("nan")
            if small:  # (else B's progress is polled all the same)
                await publish(running.settings, jobs_of("b", small, "b"))
                async with asyncio.timeout(600):
                    b_wait = await watching - submitted
            await asyncio.sleep(max(0.0, WINDOW_S - (time.monotonic() - submitted)))
            a_done = await finished_of(engine, "a")
            a_with_b = (a_done - at_b) / (time.monotonic() - submitted)
        finally:
            if watching is not None:
                watching.cancel()
            await engine.dispose()
        running.sample()
        return BehindBacklog(
            backlog,
            workers,
            read_past,
            b_wait,
            a_before,
            a_with_b,
            running.peak_rss_mb,
            backlog - a_done,
        )


async def weighted_minute(window_s: float = 10.0, windows: int = 6) -> list[tuple[int, int]]:
    """(heavy, light) jobs finished in each window of a minute: weights 3 and 1, three
    workers, backlogs of 60,000 and 30,000 read into the ledger first."""
    tenants = "[tenants.heavy]\nweight = 3.0\n[tenants.light]\nweight = 1.0\n"
    async with fleet(3, tenants, latency_ms=100, concurrency=32) as running:
        engine = create_engine(running.settings.database_url)
        try:

            def interleaved() -> Iterator[dict[str, Any]]:
                light = jobs_of("light", 30_000, "l")
                for i, heavy in enumerate(jobs_of("heavy", 60_000, "h")):
                    yield heavy
                    if i % 2 == 0:
                        yield next(light)

            await publish(running.settings, interleaved())
            await until_in_ledger(engine, 90_000 - 3 * 2 * 4096 // 3)
            counts = []
            last = (await finished_of(engine, "h"), await finished_of(engine, "l"))
            for _ in range(windows):
                await asyncio.sleep(window_s)
                now = (await finished_of(engine, "h"), await finished_of(engine, "l"))
                counts.append((now[0] - last[0], now[1] - last[1]))
                last = now
        finally:
            await engine.dispose()
    return counts


async def spill_cost(jobs: int, runs: int) -> list[tuple[float, float, float, int]]:
    """bench (a)'s workload (one tenant, ``jobs`` preloaded, concurrency 256, simulator at 0 ms,
    SQLite, embedded broker): (jobs/s spilling on, off, the naive relay, jobs spilled) per run,
    side by side, order alternating."""
    out = []
    async with stack(latency_ms=0) as st:
        for run in range(runs):
            rates: dict[bool, float] = {}
            spilled = 0
            for spill in (True, False) if run % 2 == 0 else (False, True):
                settings = st.settings(concurrency=256, buffer_spill=spill)
                config = st.config()
                await preload(settings, config, chat_jobs(jobs))
                async with running_worker(settings, config) as worker:
                    first = await wait_for(lambda w=worker: w.processed >= 1, 60)
                    last = await wait_for(lambda w=worker: w.processed >= jobs, 600)
                    if worker.spill is not None:
                        spilled = worker.spill.stored
                rates[spill] = (jobs - 1) / (last - first)
            relayed = await relay_rate(st, jobs, 256)
            out.append((rates[True], rates[False], relayed, spilled))
            print(
                f"  run {run + 1}: on {rates[True]:,.0f}, off {rates[False]:,.0f}, "
                f"relay {relayed:,.0f}"
            )
    return out


async def sections(runs: int, backlogs: tuple[int, ...] = (20_000, 1_000_000)) -> list[str]:
    """Issue 21's sections of docs/benchmarks.md: (f3), (f4), (f5)."""
    print("(f3) one lane, on PostgreSQL: B behind A's backlog, one and three workers")
    rows: list[BehindBacklog] = []
    for backlog in backlogs:
        for workers in (1, 3):
            for run in range(runs if backlog <= 20_000 else 1):
                if backlog <= 20_000:
                    rows.append(await paired(backlog, workers, run))
                else:  # a 1,000,000-job backlog's windows sit far from its end
                    rows.append(await behind_backlog(backlog, workers))
                print(f"  {rows[-1]}")
    lines = [
        "## (f3) One lane, PostgreSQL, worker processes: B's 20 jobs behind A's backlog",
        "",
        "Tenant A's backlog (normal priority) is published while 1 or 3 `headway worker`",
        "processes run (concurrency 64 each, simulator at 200 ms, embedded broker, PostgreSQL);",
        "once the ledger holds it (what did not fit the buffers is spilled), tenant B submits 20",
        "normal jobs. *Read* = from A's first record published until the ledger held A's backlog;",
        "*B* = from B's submission until its 20 results were stored (target: 5 s); A's jobs/s in",
        "the 5 s before B and in the 5 s from B's submission; *A alone* = A's jobs/s in the same",
        "5 s of a paired run (alternating order) in which B submits nothing — the *ratio* is A",
        "with B against A alone (target: ≥ 90 %; against the 5 s before B where there is no",
        "paired run); *A left* = A's jobs not finished at the end (the windows were inside A's",
        "backlog); the workers' peak RSS (target: < 300 MB).",
        "",
        "| A's backlog | workers | read | B's 20 jobs done after | A jobs/s before B "
        "| A jobs/s with B | A alone | ratio | A left | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {r.backlog:,} | {r.workers} | {r.read_past_s:.0f} s | **{r.b_wait_s:.2f} s** "
            f"| {r.a_rate_before:,.0f} | {r.a_rate_with_b:,.0f} "
            f"| {'—' if r.a_rate_alone is None else f'{r.a_rate_alone:,.0f}'} "
            f"| **{r.ratio:.2f}** | {r.a_left:,} | {r.peak_rss_mb:.0f} MB |"
            for r in rows
        ),
        "",
    ]
    print("(f4) weights 3:1 across three workers")
    windows = await weighted_minute()
    heavy, light = sum(h for h, _ in windows), sum(x for _, x in windows)
    print(f"  {windows}")
    lines += [
        "## (f4) Two heavy tenants, weights 3 and 1, one lane, three workers",
        "",
        "Backlogs of 60,000 (weight 3) and 30,000 (weight 1) jobs, read into the ledger first;",
        "three worker processes (concurrency 32, simulator at 100 ms, PostgreSQL). Jobs finished",
        "per tenant in each 10 s of one minute. Target: 3:1 within ±10 % over the minute.",
        "",
        "| 10 s window | weight 3 | weight 1 | ratio |",
        "|---|---|---|---|",
        *(f"| {i + 1} | {h:,} | {x:,} | {h / max(x, 1):.2f} |" for i, (h, x) in enumerate(windows)),
        f"| **minute** | **{heavy:,}** | **{light:,}** | **{heavy / max(light, 1):.2f}** |",
        "",
    ]
    print("(f5) what spilling costs: bench (a)'s workload, spilling on and off")
    costs = await spill_cost(20_000, runs)
    on = statistics.median(c[0] for c in costs)
    off = statistics.median(c[1] for c in costs)
    relayed = statistics.median(c[2] for c in costs)
    lines += [
        "## (f5) What spilling costs: bench (a)'s workload, spilling on and off",
        "",
        "One tenant, 20,000 preloaded jobs, concurrency 256, simulator at 0 ms, SQLite, embedded",
        "broker — a backlog far beyond the buffer, so most of it is spilled and taken back; with",
        "`HEADWAY_BUFFER_SPILL=false` the lane pauses instead. Side by side with the naive relay.",
        "",
        "| run | spilling on | spilling off | relay | jobs spilled | on / off | on / relay |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {i + 1} | {a:,.0f} | {b:,.0f} | {r:,.0f} | {n:,} | {a / b:.2f} | {a / r:.2f} |"
            for i, (a, b, r, n) in enumerate(costs)
        ),
        f"| **median** | **{on:,.0f}** | **{off:,.0f}** | **{relayed:,.0f}** | "
        f"| **{on / off:.2f}** | **{on / relayed:.2f}** |",
        "",
    ]
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sections", action="store_true", help="(f3)–(f5) as markdown")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.sections:
        print("\n".join(await sections(args.runs)))
    else:
        print(await behind_backlog(args.backlog, args.workers))


if __name__ == "__main__":
    asyncio.run(main())
