"""(b) Latency-bound: 5,000 chat jobs at 1 s provider latency, concurrency 1,000, one worker."""

from __future__ import annotations

from bench.common import Stack, chat_jobs, preload, wait_for
from tests.helpers import running_worker


async def latency_bound_wall_s(
    stack: Stack, jobs: int = 5000, concurrency: int = 1000, pipeline_runners: int = 0
) -> float:
    """Wall time from the worker's first fetched record to its last finished job."""
    settings = stack.settings(
        concurrency=concurrency,
        buffer_max_jobs=3 * concurrency,
        pipeline_runners=pipeline_runners,
    )
    config = stack.config()
    await preload(settings, config, chat_jobs(jobs, tag="lat"))
    async with running_worker(settings, config) as worker:
        last = await wait_for(lambda: worker.processed >= jobs, 300, interval_s=0.01)
        assert worker.first_fetch_at is not None
        return last - worker.first_fetch_at
