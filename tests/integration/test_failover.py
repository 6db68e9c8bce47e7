"""Failover and circuit breaking over the real broker, two real simulators and a real ledger."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable

import pytest

from broker.client import HeadwayClient
from broker.config import HeadwayConfig, parse_config
from broker.settings import Settings
from tests.helpers import chat_job, read_topic, running_worker
from workers.calls.health import RAMP_STEP_S, CircuitState
from workers.devstack.simulator import SimulatorConfig, SimulatorServer

pytestmark = pytest.mark.integration

JOBS = 200
FAILURES = 5
OPEN_S = 0.2


@pytest.fixture
async def primary() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimulatorConfig(error_rate=1.0, error_status=500)) as server:
        yield server


@pytest.fixture
async def secondary() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimulatorConfig(latency_ms=20)) as server:
        yield server


def two_deployments(primary: str, secondary: str, strategy: str = "ordered") -> HeadwayConfig:
    return parse_config(
        {
            "providers": {
                "primary": {"type": "openai_compatible", "base_url": primary},
                "secondary": {"type": "openai_compatible", "base_url": secondary},
            },
            "routes": {
                "summarize": {
                    "kind": "chat",
                    "strategy": strategy,
                    "deployments": [
                        {"provider": "primary", "model": "big", "input_usd_per_mtok": 1},
                        {"provider": "secondary", "model": "backup", "input_usd_per_mtok": 2},
                    ],
                }
            },
            "tenants": {"demo": {}},
        }
    )


async def test_a_failing_primary_opens_its_circuit_and_every_job_succeeds_on_the_secondary(
    make_settings: Callable[..., Settings],
    postgres_url: str,
    primary: SimulatorServer,
    secondary: SimulatorServer,
) -> None:
    concurrency = 64
    settings = make_settings(
        database_url=postgres_url,
        concurrency=concurrency,
        circuit_failures=FAILURES,
        circuit_open_s=OPEN_S,
    )
    config = two_deployments(primary.base_url, secondary.base_url)
    bootstrap = settings.kafka_bootstrap or ""
    async with running_worker(settings, config) as worker, HeadwayClient(settings) as client:
        # phase 1: the worker starts not knowing the primary is down
        started = time.monotonic()
        await client.submit_many([chat_job(f"f-{i}") for i in range(JOBS)])
        await read_topic(bootstrap, settings.topics.results, until_keys=JOBS)
        calls_to_open = primary.stats.calls
        phase_one_s = time.monotonic() - started
        # phase 2: the circuit is open; the primary sees only probes, one per open interval
        started = time.monotonic()
        await client.submit_many([chat_job(f"g-{i}") for i in range(JOBS)])
        results = await read_topic(bootstrap, settings.topics.results, until_keys=2 * JOBS)
        phase_two_s = time.monotonic() - started
        board = worker.pipeline.executor.board.snapshot()
        dead = worker.pipeline.executor.board["primary:big"]

    assert results.distinct() == 2 * JOBS
    served = [copies[0] for copies in results.by_key.values()]
    failed = [
        (r["status"], r["error"], r["attempts"]) for r in served if r["status"] != "succeeded"
    ]
    assert not failed, failed[:3]
    assert {r["provider"] for r in served} == {"secondary"}
    assert {r["deployment"] for r in served} == {"backup"}
    assert board["primary:big"] is not CircuitState.CLOSED
    assert board["secondary:backup"] is CircuitState.CLOSED
    # a fresh deployment ramps up from N calls, doubling every RAMP_STEP_S until its first
    # outcome, so a dead one is caught at the ramp's cap when its first failure came back (on
    # an idle machine ~10-30 ms: within two doublings of N; later on a loaded one) — then it
    # sees one probe per open interval
    assert dead.first_call_at is not None and dead.first_outcome_at is not None
    ramp_s = dead.first_outcome_at - dead.first_call_at
    cap = FAILURES * 2 ** (ramp_s / RAMP_STEP_S)
    phase_one_probes = math.ceil(phase_one_s / OPEN_S) + 1
    assert FAILURES <= calls_to_open <= min(cap, 64) + phase_one_probes, (calls_to_open, ramp_s)
    probes = primary.stats.calls - calls_to_open
    assert probes <= math.ceil(phase_two_s / OPEN_S) + 1, (probes, phase_two_s)
    # attempts count every provider call: jobs that hit the primary first show 2
    assert sum(r["attempts"] for r in served) == primary.stats.calls + secondary.stats.calls
    assert secondary.stats.calls == 2 * JOBS


async def test_when_the_primary_recovers_traffic_returns_to_it(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    primary: SimulatorServer,
    secondary: SimulatorServer,
) -> None:
    settings = make_settings(
        database_url=sqlite_url, concurrency=16, circuit_failures=2, circuit_open_s=0.3
    )
    config = two_deployments(primary.base_url, secondary.base_url)
    async with running_worker(settings, config), HeadwayClient(settings) as client:
        await client.submit_many([chat_job(f"a-{i}") for i in range(20)])
        await read_topic(settings.kafka_bootstrap or "", settings.topics.results, until_keys=20)
        primary.config.error_rate = 0.0  # the primary is back…
        await asyncio.sleep(0.4)  # …and its open interval is over: the next job probes it
        await client.submit_many([chat_job(f"b-{i}") for i in range(40)])
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=60
        )
    later = [results.by_key[f"b-{i}"][0] for i in range(40)]
    assert all(r["status"] == "succeeded" for r in later), [r["error"] for r in later][:3]
    on_primary = sum(r["provider"] == "primary" for r in later)
    # the first 16 start together: one probes the primary, the rest fail over; after the probe
    # succeeds the circuit is closed and the primary serves the others
    assert on_primary >= 20, (on_primary, primary.stats.as_dict())
