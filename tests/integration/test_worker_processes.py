"""Worker processes die and stop mid-batch; nothing is lost and nothing finishes twice.

Real `headway worker` processes, the embedded broker, PostgreSQL, real HTTP to the simulator.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from broker.admin import create_topics
from broker.client import HeadwayClient
from broker.config import load_config
from broker.settings import Settings
from tests.helpers import chat_job, read_topic
from workers.simulator import SimulatorServer

JOBS = 1500
CONCURRENCY = 64


def write_config(tmp_path: Path, simulator: SimulatorServer) -> Path:
    path = tmp_path / "headway.toml"
    path.write_text(
        f'[providers.sim]\ntype = "simulator"\nbase_url = "{simulator.base_url}"\n'
        '[routes.summarize]\nkind = "chat"\n'
        '[[routes.summarize.deployments]]\nprovider = "sim"\nmodel = "sim-chat"\n'
        "input_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n"
        "[tenants.default]\n"
    )
    return path


def spawn_worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "HEADWAY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "HEADWAY_DATABASE_URL": settings.database_url,
        "HEADWAY_TOPIC_PREFIX": settings.topic_prefix,
        "HEADWAY_CONSUMER_GROUP": settings.consumer_group,
        "HEADWAY_CONFIG": str(settings.config),
        "HEADWAY_CONCURRENCY": str(settings.concurrency),
        "HEADWAY_LEASE_S": str(settings.lease_s),
        "HEADWAY_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
        "HEADWAY_JOB_PARTITIONS": str(settings.job_partitions),
        "HEADWAY_SHUTDOWN_GRACE_S": str(settings.shutdown_grace_s),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "workers", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def wait_for_results(settings: Settings, count: int) -> None:
    await read_topic(
        settings.kafka_bootstrap or "", settings.topics.results, until_keys=count, timeout_s=120
    )


async def submit_batch(settings: Settings) -> None:
    await create_topics(settings, load_config(settings.config))
    async with HeadwayClient(settings) as client:
        await client.submit_many(chat_job(f"job-{i}", batch_id="kill") for i in range(JOBS))


def stop(process: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    process.send_signal(sig)
    return process.wait(30)


async def test_a_sigkilled_worker_loses_nothing_and_repeats_at_most_its_in_flight_calls(
    make_settings: Callable[..., Settings],
    postgres_url: str,
    simulator: SimulatorServer,
    tmp_path: Path,
) -> None:
    simulator.config.latency_ms = 20
    settings = make_settings(
        database_url=postgres_url,
        config=write_config(tmp_path, simulator),
        concurrency=CONCURRENCY,
        lease_s=3.0,
    )
    await submit_batch(settings)
    first = spawn_worker(settings)
    try:
        await wait_for_results(settings, 300)
    finally:
        stop(first, signal.SIGKILL)
    second = spawn_worker(settings)
    try:
        await wait_for_results(settings, JOBS)
    finally:
        code = await asyncio.to_thread(stop, second, signal.SIGTERM)
        assert code == 0, second.stderr.read().decode()[-3000:] if second.stderr else ""

    results = await read_topic(
        settings.kafka_bootstrap or "", settings.topics.results, until_keys=JOBS
    )
    assert results.distinct() == JOBS
    for key, copies in results.by_key.items():
        assert len({c["completed_at"] for c in copies}) == 1, f"{key} has two different results"
        assert copies[0]["status"] == "succeeded"
    calls = sum(simulator.stats.jobs.values())
    assert JOBS <= calls <= JOBS + CONCURRENCY, calls
    assert set(simulator.stats.jobs) == {f"job-{i}" for i in range(JOBS)}


async def test_sigterm_drains_in_flight_jobs_and_a_restart_repeats_none(
    make_settings: Callable[..., Settings],
    postgres_url: str,
    simulator: SimulatorServer,
    tmp_path: Path,
) -> None:
    simulator.config.latency_ms = 20
    settings = make_settings(
        database_url=postgres_url,
        config=write_config(tmp_path, simulator),
        concurrency=CONCURRENCY,
    )
    await submit_batch(settings)
    first = spawn_worker(settings)
    try:
        await wait_for_results(settings, 300)
    finally:
        code = await asyncio.to_thread(stop, first, signal.SIGTERM)
    assert code == 0, first.stderr.read().decode()[-3000:] if first.stderr else ""
    second = spawn_worker(settings)
    try:
        await wait_for_results(settings, JOBS)
    finally:
        assert await asyncio.to_thread(stop, second, signal.SIGTERM) == 0
    assert sum(simulator.stats.jobs.values()) == JOBS
    assert max(simulator.stats.jobs.values()) == 1
