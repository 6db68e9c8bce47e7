"""(b) Latency-bound: 5,000 chat jobs at 1 s provider latency, concurrency 1,000, one worker.

Beside headway, the same run measures three floors on the same machine: the naive relay
(aiokafka → httpx → aiokafka, ``bench/relay.py``), the bare HTTP loop (5,000 POSTs through
the worker's own httpx client at concurrency 1,000, no Kafka, no ledger) and the same loop on
aiohttp alone. The stated ideal,
5 s, assumes calls cost nothing but the provider's latency.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import httpx

from bench.common import Stack, chat_jobs, preload, wait_for
from bench.relay import relay
from broker.settings import HttpSettings
from schemas.jobs import Priority
from tests.helpers import running_worker
from workers.providers.http import create_http_client, post_json


async def latency_bound_wall_s(
    stack: Stack,
    jobs: int = 5000,
    concurrency: int = 1000,
    pipeline_runners: int | None = None,
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
        assert worker.fetcher is not None and worker.fetcher.first_fetch_at is not None
        return last - worker.fetcher.first_fetch_at


async def relay_wall_s(stack: Stack, jobs: int = 5000, concurrency: int = 1000) -> float:
    """The naive relay, timed the same way: first fetched record to last result produced."""
    settings = stack.settings()
    await preload(settings, stack.config(), chat_jobs(jobs, tag="lat"))
    fetched, _, last = await relay(
        stack.bootstrap,
        settings.topics.jobs(Priority.NORMAL),
        settings.topics.results,
        stack.simulator_url,
        concurrency,
        jobs,
        f"{settings.topic_prefix}-relay",
    )
    return last - fetched


def _chat_body(i: int) -> dict[str, Any]:
    """The request each floor posts: what the worker sends for a benchmark chat job."""
    return {
        "model": "sim-chat-mini",
        "messages": [{"role": "user", "content": f"Summarise document {i}."}],
        "max_tokens": 16,
    }


async def http_floor_wall_s(stack: Stack, calls: int = 5000, concurrency: int = 1000) -> float:
    """The same calls with nothing around them: a fresh client, a semaphore, POST, parse."""
    url = httpx.URL(f"{stack.simulator_url}/chat/completions")
    timeout = httpx.Timeout(60.0, connect=10.0)
    slots = asyncio.Semaphore(concurrency)

    async def call(client: httpx.AsyncClient, i: int) -> None:
        async with slots:
            (await post_json(client, url, _chat_body(i), {}, timeout)).json()

    async with create_http_client(HttpSettings(2 * concurrency)) as client:
        started = time.perf_counter()
        await asyncio.gather(*(call(client, i) for i in range(calls)))
        return time.perf_counter() - started


async def raw_aiohttp_floor_wall_s(
    stack: Stack, calls: int = 5000, concurrency: int = 1000
) -> float:
    """The same calls through aiohttp alone (no httpx objects): the cheapest asyncio HTTP
    client here, so the floor of any Python worker on this machine and simulator."""
    url = f"{stack.simulator_url}/chat/completions"
    slots = asyncio.Semaphore(concurrency)
    headers = {"content-type": "application/json"}

    async def call(session: aiohttp.ClientSession, i: int) -> None:
        body = json.dumps(_chat_body(i)).encode()
        async with slots, session.post(url, data=body, headers=headers) as r:
            json.loads(await r.read())

    connector = aiohttp.TCPConnector(limit=2 * concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(call(session, i) for i in range(calls)))
        return time.perf_counter() - started
