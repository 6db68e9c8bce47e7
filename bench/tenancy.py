"""Quotas and budgets across two worker processes sharing PostgreSQL (issue 4's long runs).

(g) tenant ``rpm = 600``: the most calls the simulator saw for the tenant in any sliding 60 s
    window, against the stated bound, and whether every job finished.
(h) tenant ``budget_usd = 1.00``: 1,000 concurrent jobs of about $0.01: the final spend, the
    jobs rejected ``budget_exceeded``, and the ledger's spend against the distinct usage events.

python -m bench.tenancy            # both
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from broker.admin import create_topics
from broker.client import HeadwayClient
from broker.config import load_config
from broker.embedded import EmbeddedKafka
from broker.settings import Settings
from tests.chaos.processes import spawn_worker
from tests.helpers import read_topic
from workers.admission.quotas import over_admission_bound
from workers.devstack.simulator import SimulatorConfig, SimulatorServer
from workers.ledger.database.engine import create_engine, upgrade
from workers.ledger.database.models import BudgetRow, UsageRow, from_nano, to_nano
from workers.ledger.queries import batch_status

POSTGRES_URL = os.environ.get(
    "HEADWAY_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
RPM = 600
RPM_JOBS = 800  # 80 s of the tenant's quota: more than one full minute of pacing
BUDGET_JOBS = 1000
WORKERS = 2


@contextlib.asynccontextmanager
async def fresh_postgres() -> AsyncIterator[str]:
    import asyncpg

    admin = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://"))
    name = f"headway_bench_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{POSTGRES_URL.rpartition('/')[0]}/{name}"
        await upgrade(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def write_config(path: Path, simulator_url: str, tenant: str) -> Path:
    path.write_text(
        f'[providers.sim]\ntype = "simulator"\nbase_url = "{simulator_url}"\n'
        '[routes.summarize]\nkind = "chat"\n'
        '[[routes.summarize.deployments]]\nprovider = "sim"\nmodel = "sim-chat"\n'
        "input_usd_per_mtok = 100.0\noutput_usd_per_mtok = 150.0\n"
        f"[tenants.acme]\n{tenant}\n"
    )
    return path


def jobs(count: int, batch: str) -> list[dict[str, Any]]:
    return [
        {
            "job_id": f"{batch}-{i}",
            "tenant": "acme",
            "kind": "chat",
            "route": "summarize",
            "batch_id": batch,
            "messages": [{"role": "user", "content": f"Summarise benchmark document {i}."}],
            "params": {"max_tokens": 50},
        }
        for i in range(count)
    ]


@dataclass
class Run:
    settings: Settings
    simulator: SimulatorServer
    wall_s: float
    by_status: dict[str, int]
    usage: dict[str, dict[str, Any]]  # distinct usage events by event_id
    budget_nusd: int  # the ledger's budget spend (0 without a budget)
    ledger_nusd: int  # the sum of the usage events the ledger stored


async def run_two_workers(tenant: str, count: int, latency_ms: float) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix="headway-bench-tenancy-"))
    simulator = SimulatorServer(SimulatorConfig(seed=3, latency_ms=latency_ms))
    async with EmbeddedKafka() as kafka, fresh_postgres() as url, simulator as sim:
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        settings = Settings(
            kafka_bootstrap=kafka.bootstrap,
            database_url=url,
            topic_prefix=prefix,
            consumer_group=f"{prefix}-workers",
            config=write_config(workdir / "headway.toml", sim.base_url, tenant),
            concurrency=512,
            session_timeout_ms=6000,
            job_partitions=4,
        )
        await create_topics(settings, load_config(settings.config))
        workers = [spawn_worker(settings) for _ in range(WORKERS)]
        engine = create_engine(url)
        try:
            await asyncio.sleep(3)  # both join the group before the batch arrives
            async with HeadwayClient(settings) as client:
                started = time.monotonic()
                await client.submit_many(jobs(count, "q"))
            while True:
                status = await batch_status(engine, "q")
                if status.finished >= count or time.monotonic() - started > 600:
                    break
                await asyncio.sleep(0.5)
            wall = time.monotonic() - started
            usage = await read_topic(
                kafka.bootstrap, settings.topics.usage, until_keys=10**9, timeout_s=5
            )
            async with engine.connect() as conn:
                budget = (await conn.execute(select(func.sum(BudgetRow.spent_nusd)))).scalar()
                ledger = (await conn.execute(select(func.sum(UsageRow.cost_nusd)))).scalar()
        finally:
            await engine.dispose()
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                worker.wait(60)
        events = {e["event_id"]: e for e in (json.loads(r.value) for r in usage.records)}
        return Run(
            settings, sim, wall, status.by_status, events, int(budget or 0), int(ledger or 0)
        )


def max_in_window(times: list[float], window_s: float = 60.0) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


async def rpm_across_workers() -> dict[str, Any]:
    run = await run_two_workers(f"rpm = {RPM}", RPM_JOBS, latency_ms=50)
    calls = [at for at, job in run.simulator.stats.timeline if job.startswith("q-")]
    return {
        "jobs": RPM_JOBS,
        "finished": sum(run.by_status.values()) - run.by_status.get("running", 0),
        "succeeded": run.by_status.get("succeeded", 0),
        "calls": len(calls),
        "max_60s": max_in_window(calls),
        "bound": over_admission_bound(RPM, WORKERS),
        "limit_105": RPM * 1.05,
        "wall_s": run.wall_s,
    }


async def budget_across_workers() -> dict[str, Any]:
    run = await run_two_workers('budget_usd = 1.00\nbudget_period = "total"', BUDGET_JOBS, 200)
    events, budget, ledger = run.usage, run.budget_nusd, run.ledger_nusd
    return {
        "jobs": BUDGET_JOBS,
        "succeeded": run.by_status.get("succeeded", 0),
        "rejected": run.by_status.get("rejected", 0),
        "budget_spend_usd": from_nano(int(budget)),
        "ledger_usage_usd": from_nano(int(ledger)),
        "usage_events_usd": from_nano(sum(to_nano(e["cost_usd"]) for e in events.values())),
        "usage_events": len(events),
        "max_job_cost_usd": 20 * 100.0 / 1e6 + 50 * 150.0 / 1e6,  # ≈ estimate × price
        "wall_s": run.wall_s,
    }


async def main() -> None:
    print(json.dumps(await rpm_across_workers(), indent=2))
    print(json.dumps(await budget_across_workers(), indent=2))


if __name__ == "__main__":
    asyncio.run(main())


def markdown(rpm: dict[str, Any], budget: dict[str, Any]) -> list[str]:
    """Sections (g) and (h) of docs/benchmarks.md."""
    return [
        "## (g) Tenant rpm across two worker processes (PostgreSQL)",
        "",
        f"Two `headway worker` processes share PostgreSQL; tenant `rpm = {RPM}`; {RPM_JOBS} jobs",
        "(simulator at 50 ms, in the bench process, recording when each job was called). The most",
        "calls in any sliding 60 s window, against the stated over-admission bound",
        "(`docs/tenancy.md`) and the acceptance limit of 600 × 1.05 + lease granularity.",
        "",
        "| jobs finished | calls | max calls in any 60 s | stated bound | 600 × 1.05 | wall |",
        "|---|---|---|---|---|---|",
        f"| {rpm['finished']}/{rpm['jobs']} | {rpm['calls']} | **{rpm['max_60s']}** | "
        f"{rpm['bound']} | {rpm['limit_105']:.0f} | {rpm['wall_s']:.1f} s |",
        "",
        "## (h) Tenant budget across two worker processes (PostgreSQL)",
        "",
        f"Tenant `budget_usd = 1.00` (`total`); {BUDGET_JOBS:,} jobs submitted at once to two",
        "workers (concurrency 512 each, simulator at 200 ms); each job's maximum cost ≈ "
        f"${budget['max_job_cost_usd']:.4f}.",
        "",
        "| succeeded | rejected budget_exceeded | budget spend | ledger usage sum | "
        "distinct usage events (sum) |",
        "|---|---|---|---|---|",
        f"| {budget['succeeded']} | {budget['rejected']} | ${budget['budget_spend_usd']:.6f} | "
        f"${budget['ledger_usage_usd']:.6f} | {budget['usage_events']} "
        f"(${budget['usage_events_usd']:.6f}) |",
        "",
    ]
