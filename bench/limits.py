"""Provider-limit utilisation: a deployment declared at ``rpm = 600`` against a simulator that
enforces 600 requests per sliding minute with 429 + Retry-After.

A backlog larger than a minute's worth waits in Kafka; the worker runs with concurrency 64.
Over the 60 s after the first finished job, the simulator's own counters give the sustained
rate of answered calls and the share of calls it refused with 429.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import Stack, chat_jobs, preload, wait_for
from broker.config import HeadwayConfig, parse_config
from tests.helpers import running_worker

RPM = 600
WINDOW_S = 60.0


@dataclass
class Utilisation:
    answered_per_min: float
    rate_limited_share: float

    @property
    def of_declared(self) -> float:
        return self.answered_per_min / RPM


def limited_config(simulator_url: str) -> HeadwayConfig:
    return parse_config(
        {
            "providers": {"simulator": {"type": "simulator", "base_url": simulator_url}},
            "routes": {
                "summarize": {
                    "kind": "chat",
                    "deployments": [
                        {
                            "provider": "simulator",
                            "model": "sim-chat-mini",
                            "input_usd_per_mtok": 0.15,
                            "output_usd_per_mtok": 0.60,
                            "rpm": RPM,
                        }
                    ],
                }
            },
            "tenants": {"demo": {}},
        }
    )


async def _stats(stack: Stack) -> dict[str, Any]:
    url = stack.simulator_url.removesuffix("/v1") + "/_sim/stats"
    async with httpx.AsyncClient() as client:
        stats: dict[str, Any] = (await client.get(url)).json()
        return stats


async def rpm_utilisation(stack: Stack) -> Utilisation:
    settings = stack.settings(concurrency=64)
    config = limited_config(stack.simulator_url)
    await preload(settings, config, chat_jobs(int(RPM * 1.5), tag="rpm"))
    async with running_worker(settings, config) as worker:
        await wait_for(lambda: worker.processed >= 1, 60)
        before = await _stats(stack)
        started = time.perf_counter()
        await asyncio.sleep(WINDOW_S)
        after = await _stats(stack)
        elapsed = time.perf_counter() - started
    answered = after["chat_calls"] - before["chat_calls"]
    calls = after["calls"] - before["calls"]
    limited = after["rate_limited"] - before["rate_limited"]
    return Utilisation(answered / elapsed * 60, limited / calls if calls else 0.0)
