"""Embedding backfill: single-text embedding jobs with micro-batching (``max_batch_inputs =
256``) and without, against the same simulator, one worker process.

Two provider profiles, each run side by side:

- *limited*: a typical embeddings account — 3,000 requests per minute declared and enforced
  by the simulator (429 beyond it), 100 ms per request. This is where batching pays: requests,
  not jobs, are what the provider rations.
- *unlimited*: no limits, 0 ms — the worker's own cost per job decides (jobs/s per core).

The unbatched side of the limited profile runs for a fixed window rather than the whole
backlog (at 50 requests a second, 20,000 jobs would take seven minutes); its rate is jobs
finished in the window over the window.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import Stack, preload, wait_for
from broker.config import HeadwayConfig, parse_config
from tests.helpers import running_worker

BATCH = 256
LIMITED_RPM = 3000
UNBATCHED_WINDOW_S = 20.0
CONCURRENCY = 4096


@dataclass
class EmbeddingRun:
    jobs: int
    seconds: float
    requests: int
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    @property
    def per_core(self) -> float:
        return self.jobs / self.cpu_s if self.cpu_s else 0.0


def embedding_jobs(count: int, tag: str) -> Iterator[dict[str, Any]]:
    for i in range(count):
        yield {
            "job_id": f"{tag}-{i}",
            "tenant": "demo",
            "kind": "embedding",
            "route": "embed",
            "input": f"Backfill document {i}: a paragraph of text to embed for search.",
        }


def embed_config(url: str, batched: bool, rpm: int | None) -> HeadwayConfig:
    deployment: dict[str, Any] = {
        "provider": "simulator",
        "model": "sim-embed-small",
        "input_usd_per_mtok": 0.02,
    }
    if batched:
        deployment["max_batch_inputs"] = BATCH
    if rpm is not None:
        deployment["rpm"] = rpm
    return parse_config(
        {
            "providers": {"simulator": {"type": "simulator", "base_url": url}},
            "routes": {"embed": {"kind": "embedding", "deployments": [deployment]}},
            "tenants": {"demo": {}},
        }
    )


async def _embedding_calls(stack: Stack) -> int:
    url = stack.simulator_url.removesuffix("/v1") + "/_sim/stats"
    async with httpx.AsyncClient() as client:
        calls: int = (await client.get(url)).json()["embedding_calls"]
        return calls


async def embedding_run(
    stack: Stack, jobs: int, *, batched: bool, rpm: int | None, window_s: float | None = None
) -> EmbeddingRun:
    settings = stack.settings(concurrency=CONCURRENCY, buffer_max_jobs=3 * CONCURRENCY)
    config = embed_config(stack.simulator_url, batched, rpm)
    tag = f"{'b' if batched else 'u'}{time.monotonic_ns()}"
    await preload(settings, config, embedding_jobs(jobs, tag))
    calls_before = await _embedding_calls(stack)
    async with running_worker(settings, config) as worker:
        first = await wait_for(lambda: worker.processed >= 1, 60)
        cpu_before, done_before = time.process_time(), worker.processed
        if window_s is None:
            last = await wait_for(lambda: worker.processed >= jobs, 900)
        else:
            last = await wait_for(lambda: time.perf_counter() >= first + window_s, window_s + 5)
        done, cpu = worker.processed - done_before, time.process_time() - cpu_before
    requests = await _embedding_calls(stack) - calls_before
    return EmbeddingRun(done, last - first, requests, cpu)
