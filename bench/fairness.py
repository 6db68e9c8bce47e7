"""Fairness: tenant A has 20,000 jobs queued; tenant B submits 20 normal jobs while A's backlog
runs (simulator at 200 ms). How long until all of B's results are stored? A's jobs are low
priority (fairness across lanes) or, with ``same_lane``, normal like B's (issue 21: the
backlog sits ahead of B's jobs in the same partitions)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from bench.common import Stack, preload, wait_for
from broker.client import HeadwayClient
from tests.helpers import running_worker
from workers.ledger.database.engine import create_engine
from workers.ledger.queries import batch_status

BACKLOG = 20_000
SMALL = 20


def tenant_jobs(tenant: str, count: int, priority: str, batch: str) -> Iterator[dict[str, Any]]:
    for i in range(count):
        yield {
            "job_id": f"{batch}-{i}",
            "tenant": tenant,
            "kind": "chat",
            "route": "summarize",
            "priority": priority,
            "batch_id": batch,
            "messages": [{"role": "user", "content": f"Summarise document {i}."}],
            "params": {"max_tokens": 16},
        }


async def small_tenant_wait_s(
    stack: Stack, *, same_lane: bool = False, **overrides: Any
) -> tuple[float, int]:
    """(seconds from B's submission until its 20 results are stored, A's jobs done by then);
    ``overrides``: settings (e.g. ``concurrency``)."""
    settings = stack.settings(**overrides)
    config = stack.config()
    tag = f"{time.monotonic_ns()}"
    lane = "normal" if same_lane else "low"
    await preload(settings, config, tenant_jobs("demo", BACKLOG, lane, f"a{tag}"))
    engine = create_engine(settings.database_url)
    try:
        async with running_worker(settings, config) as worker:
            await wait_for(lambda: worker.processed >= 500, 120)  # A's backlog is running
            async with HeadwayClient(settings) as client:
                started = time.monotonic()
                await client.submit_many(tenant_jobs("default", SMALL, "normal", f"b{tag}"))
            while True:
                status = await batch_status(engine, f"b{tag}")
                if status.by_status.get("succeeded", 0) >= SMALL:
                    return time.monotonic() - started, worker.processed
                if time.monotonic() - started > 300:
                    raise TimeoutError("tenant B's jobs did not finish")
                await asyncio.sleep(0.02)
    finally:
        await engine.dispose()
