"""Provider-limit utilisation: a deployment declared at ``rpm = 600`` against a simulator that
enforces 600 requests per sliding minute with 429 + Retry-After.

A backlog larger than a minute's worth waits in Kafka; the worker runs with concurrency 64.
Over the 60 s after the first finished job, the simulator's own counters give the sustained
rate of answered calls and the share of calls it refused with 429.
"""

from __future__ import annotations

import asyncio
import signal
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
    return await _sim_stats(stack.simulator_url)


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


async def _sim_stats(base_url: str) -> dict[str, Any]:
    url = base_url.removesuffix("/v1") + "/_sim/stats"
    async with httpx.AsyncClient() as client:
        stats: dict[str, Any] = (await client.get(url)).json()
        return stats


async def fleet_utilisation(workers: int = 3, *, churn: bool = False) -> Utilisation:
    """``workers`` worker processes on PostgreSQL sharing the deployment's 600 rpm; with
    ``churn``, one is killed (SIGKILL) 20 s into the minute and another joins at 40 s."""
    from bench.same_lane import fleet, publish
    from tests.chaos.processes import spawn_worker

    async with fleet(
        workers,
        "[tenants.demo]\n",
        latency_ms=0,
        concurrency=64,
        deployment=f"rpm = {RPM}\n",
        simulator_rpm=RPM,
    ) as running:
        await publish(running.settings, iter(chat_jobs(RPM * 3, tag="fleet")))
        url = running.simulator_url
        for _ in range(600):
            if (await _sim_stats(url))["chat_calls"] >= 1:
                break
            await asyncio.sleep(0.1)
        before = await _sim_stats(url)
        started = time.perf_counter()
        if churn:
            await asyncio.sleep(WINDOW_S / 3)
            running.processes[0].send_signal(signal.SIGKILL)
            await asyncio.sleep(WINDOW_S / 3)
            running.processes.append(spawn_worker(running.settings))
        await asyncio.sleep(WINDOW_S - (time.perf_counter() - started))
        after = await _sim_stats(url)
        elapsed = time.perf_counter() - started
    answered = after["chat_calls"] - before["chat_calls"]
    calls = after["calls"] - before["calls"]
    limited = after["rate_limited"] - before["rate_limited"]
    return Utilisation(answered / elapsed * 60, limited / calls if calls else 0.0)


async def main() -> None:
    for churn in (False, True):
        u = await fleet_utilisation(3, churn=churn)
        label = "three workers" + (" (one killed, one joins)" if churn else "")
        print(f"{label}: {u.answered_per_min:.0f}/min ({u.of_declared:.1%}), ", end="")
        print(f"429s {u.rate_limited_share:.2%}")


if __name__ == "__main__":
    asyncio.run(main())
