"""A provider down for a while under a steady stream of jobs, then back.

With a second deployment healthy, no job fails: they fail over while the primary answers 500s
or refuses connections, and traffic returns to the primary once it is back. With no other
deployment, jobs wait (retry, then parked on the retry topic) and all complete after recovery.
Real broker, real HTTP to simulators (one is stopped and restarted on its port), real ledger.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from broker.client import HeadwayClient
from broker.config import HeadwayConfig, parse_config
from broker.settings import Settings
from tests.chaos.conftest import FULL, size
from tests.chaos.processes import results
from tests.helpers import chat_job, running_worker
from workers.devstack.simulator import SimulatorConfig, SimulatorServer

OUTAGE_S = float(size(4, 30))
# `make test` takes one kind of outage here (the other is the next test's); `make chaos` both
HOWS = ["errors", "refused"] if FULL else ["errors"]
RATE = 50  # jobs submitted per second, before, during and after the outage
BEFORE_S, AFTER_S = 2.0, 4.0


def route_config(*servers: SimulatorServer) -> HeadwayConfig:
    names = ["primary", "secondary"][: len(servers)]
    return parse_config(
        {
            "providers": {
                name: {"type": "simulator", "base_url": server.base_url}
                for name, server in zip(names, servers, strict=True)
            },
            "routes": {
                "summarize": {
                    "kind": "chat",
                    "strategy": "ordered",
                    "deployments": [
                        {"provider": name, "model": f"{name}-model", "input_usd_per_mtok": 1}
                        for name in names
                    ],
                }
            },
            "tenants": {"demo": {}},
        }
    )


async def take_down(server: SimulatorServer, how: str) -> None:
    if how == "errors":
        server.config.error_rate, server.config.error_status = 1.0, 500
    else:
        await server.stop()  # connection refused


async def bring_back(server: SimulatorServer, how: str) -> None:
    if how == "errors":
        server.config.error_rate = 0.0
    else:
        await server.start()  # the same port


async def stream_jobs(settings: Settings, primary: SimulatorServer, how: str) -> dict[str, Any]:
    """Submit RATE jobs/s while the primary goes down and comes back; returns the timings."""
    total = int(RATE * (BEFORE_S + OUTAGE_S + AFTER_S))
    started = time.monotonic()
    down_at = up_at = 0.0
    async with HeadwayClient(settings) as client:
        for i in range(total):
            now = time.monotonic() - started
            if not down_at and now >= BEFORE_S:
                await take_down(primary, how)
                down_at = now
            if down_at and not up_at and now >= BEFORE_S + OUTAGE_S:
                await bring_back(primary, how)
                up_at = now
            await client.submit(chat_job(f"job-{i}"))
            await asyncio.sleep(max(0.0, (i + 1) / RATE - (time.monotonic() - started)))
    return {"jobs": total, "down_at_s": round(down_at, 2), "up_at_s": round(up_at, 2)}


@pytest.mark.parametrize("how", HOWS)
async def test_no_job_fails_while_a_deployment_is_healthy_and_traffic_returns_after(
    how: str,
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    figures: Callable[..., None],
) -> None:
    async with (
        SimulatorServer(SimulatorConfig(latency_ms=20)) as primary,
        SimulatorServer(SimulatorConfig(latency_ms=20)) as secondary,
    ):
        settings = make_settings(database_url=sqlite_url, circuit_open_s=1.0)
        async with running_worker(settings, route_config(primary, secondary)):
            timing = await stream_jobs(settings, primary, how)
            collected = await results(settings, timing["jobs"])
            primary_after = primary.stats.chat_calls  # a restarted server counts afresh
    statuses = {copies[0]["status"] for copies in collected.by_key.values()}
    assert statuses == {"succeeded"}, statuses
    by_deployment: dict[str, int] = {}
    for copies in collected.by_key.values():
        name = copies[0]["provider"]
        by_deployment[name] = by_deployment.get(name, 0) + 1
    assert by_deployment.get("secondary", 0) >= RATE * OUTAGE_S * 0.8  # the outage's traffic
    assert primary_after > 0 and by_deployment.get("primary", 0) >= RATE * AFTER_S * 0.5
    figures(
        how=how,
        outage_s=OUTAGE_S,
        succeeded=len(collected.by_key),
        **timing,
        **{f"served_by_{name}": count for name, count in by_deployment.items()},
    )


async def test_with_no_other_deployment_jobs_wait_out_the_outage_and_all_complete(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    figures: Callable[..., None],
) -> None:
    async with SimulatorServer(SimulatorConfig(latency_ms=20)) as only:
        settings = make_settings(
            database_url=sqlite_url, circuit_open_s=1.0, retry_park_after_s=1.0
        )
        async with running_worker(settings, route_config(only)):
            timing = await stream_jobs(settings, only, "refused")
            collected = await results(settings, timing["jobs"], timeout_s=OUTAGE_S + 120)
    assert len(collected.by_key) == timing["jobs"]
    statuses = {copies[0]["status"] for copies in collected.by_key.values()}
    assert statuses == {"succeeded"}, statuses
    attempts = [copies[0]["attempts"] for copies in collected.by_key.values()]
    figures(
        outage_s=OUTAGE_S,
        succeeded=len(collected.by_key),
        max_attempts_of_a_job=max(attempts),
        **timing,
    )
