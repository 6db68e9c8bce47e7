"""``headway demo``: the bundled summarisation + embedding backfill on the embedded stack."""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from broker.client import HeadwayClient
from broker.settings import Settings
from schemas.jobs import JobRequest
from schemas.results import JobResult
from workers.devstack.stack import embedded_stack
from workers.runtime.worker import Worker

TENANT = "demo"
RESULTS_FILE = Path("headway-demo-results.jsonl")


def load_documents() -> list[dict[str, str]]:
    text = (
        resources.files("workers.devstack").joinpath("demo_data/documents.jsonl").read_text("utf-8")
    )
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def demo_jobs(documents: list[dict[str, str]], batch_id: str) -> list[JobRequest]:
    jobs = []
    for doc in documents:
        jobs.append(
            JobRequest.model_validate(
                {
                    "job_id": f"sum-{doc['id']}",
                    "tenant": TENANT,
                    "kind": "chat",
                    "route": "summarize",
                    "batch_id": batch_id,
                    "template": {"name": "summarize", "variables": {"text": doc["text"]}},
                    "params": {"max_tokens": 80, "temperature": 0},
                    "metadata": {"doc": doc["id"], "title": doc["title"]},
                }
            )
        )
        jobs.append(
            JobRequest.model_validate(
                {
                    "job_id": f"emb-{doc['id']}",
                    "tenant": TENANT,
                    "kind": "embedding",
                    "route": "embed",
                    "batch_id": batch_id,
                    "input": doc["text"],
                    "priority": "low",
                    "metadata": {"doc": doc["id"]},
                }
            )
        )
    return jobs


@dataclass
class Tally:
    by_status: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    tokens: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    cost: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    jobs: Counter[str] = field(default_factory=Counter)

    def add(self, result: JobResult, submitted_at: float) -> None:
        self.by_status[result.status.value] += 1
        self.latencies_ms.append((time.time() - submitted_at) * 1000)
        route = result.route or "-"
        self.jobs[route] += 1
        self.tokens[route][0] += result.usage.input_tokens
        self.tokens[route][1] += result.usage.output_tokens
        self.cost[route] += result.cost_usd


def _summary(tally: Tally, wall_s: float, total: int) -> list[Table]:
    status = Table(
        title=f"headway demo — {total} jobs in {wall_s:.1f} s ({total / wall_s:.0f} jobs/s)",
        min_width=60,  # the title on one line
    )
    status.add_column("status")
    status.add_column("jobs", justify="right")
    for name, count in sorted(tally.by_status.items()):
        status.add_row(name, str(count))
    lat = sorted(tally.latencies_ms)
    p50 = statistics.median(lat) if lat else 0.0
    p95 = lat[int(len(lat) * 0.95) - 1] if lat else 0.0
    status.add_row("latency p50 / p95", f"{p50:.0f} ms / {p95:.0f} ms")
    routes = Table(title="tokens and cost by route")
    for column in ("route", "jobs", "input tokens", "output tokens", "cost USD"):
        routes.add_column(column, justify="left" if column == "route" else "right")
    for route, count in sorted(tally.jobs.items()):
        tokens_in, tokens_out = tally.tokens[route]
        routes.add_row(
            route, str(count), f"{tokens_in:,}", f"{tokens_out:,}", f"{tally.cost[route]:.6f}"
        )
    return [status, routes]


async def run_demo(settings: Settings, console: Console, limit: int | None = None) -> Tally:
    documents = load_documents()[:limit]
    batch_id = f"demo-{int(time.time())}"
    jobs = demo_jobs(documents, batch_id)
    with tempfile.TemporaryDirectory(prefix="headway-demo-") as tmp:
        if settings.database_url == Settings.model_fields["database_url"].default:
            settings = settings.model_copy(
                update={"database_url": f"sqlite+aiosqlite:///{tmp}/headway-demo.db"}
            )
        console.print("[bold]headway demo[/]: starting the embedded broker, simulator and ledger …")
        async with embedded_stack(
            settings, simulator_latency_ms=20, simulator_jitter_ms=30
        ) as stack:
            console.print(
                f"broker {stack.settings.kafka_bootstrap} · simulator {stack.simulator_url} · "
                f"ledger {stack.settings.database_url}"
            )
            async with (
                Worker(stack.settings, stack.config) as worker,
                HeadwayClient(stack.settings) as client,
            ):
                stop = asyncio.Event()
                serving = asyncio.create_task(worker.run(stop))
                tally = await _submit_and_follow(client, jobs, batch_id, console)
                stop.set()
                await serving
    return tally


async def _submit_and_follow(
    client: HeadwayClient, jobs: list[JobRequest], batch_id: str, console: Console
) -> Tally:
    tally = Tally()
    started = time.time()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    # a local results file with small buffered writes: blocking is negligible here
    with Progress(*columns, console=console) as progress, RESULTS_FILE.open("w") as out:  # noqa: ASYNC230
        task = progress.add_task(f"{len(jobs)} jobs (batch {batch_id})", total=len(jobs))
        await client.submit_many(jobs)
        seen: set[str] = set()
        async for result in client.results(batch_id, idle_timeout_s=60):
            if result.job_id in seen:
                continue  # a redelivered job's result, re-published unchanged
            seen.add(result.job_id)
            tally.add(result, started)
            out.write(result.model_dump_json() + "\n")
            progress.advance(task)
            if len(seen) == len(jobs):
                break
    wall = time.time() - started
    for table in _summary(tally, wall, len(jobs)):
        console.print(table)
    console.print(f"results written to [bold]{RESULTS_FILE}[/]")
    return tally
