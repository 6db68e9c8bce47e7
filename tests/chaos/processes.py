"""Real `headway worker` processes for chaos scenarios, and the checks they share."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from broker.settings import Settings
from tests.helpers import Collected, read_topic
from workers.devstack.simulator import SimulatorServer
from workers.ledger.database.engine import create_engine
from workers.ledger.database.models import JobRow, RowStatus, UsageRow, to_nano

LOGS: dict[int, Path] = {}  # worker pid → its log file


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


def spawn_worker(
    settings: Settings, *extra: str, worker_id: str | None = None
) -> subprocess.Popen[bytes]:
    names = [
        "kafka_bootstrap",
        "database_url",
        "topic_prefix",
        "consumer_group",
        "config",
        "concurrency",
        "lease_s",
        "session_timeout_ms",
        "job_partitions",
        "shutdown_grace_s",
        "enable_idempotence",
        "budget_gauges_s",
    ]
    env = {**os.environ}
    for name in names:
        value = getattr(settings, name)
        env[f"HEADWAY_{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value or "")
        )
    if worker_id is not None:
        env["HEADWAY_WORKER_ID"] = worker_id
    # the log goes to a file: a pipe nobody reads fills up and blocks the worker mid-write
    with tempfile.NamedTemporaryFile(prefix="headway-worker-", suffix=".log", delete=False) as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "workers", "worker", *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    LOGS[process.pid] = Path(log.name)
    return process


def wait_until_catching(
    process: subprocess.Popen[bytes], sig: signal.Signals, timeout_s: float = 60
) -> None:
    """Until the process has its own handler for ``sig`` (Linux: SigCgt in /proc) or has
    ended: before that, a SIGTERM ends a worker that is still importing by the signal's default
    action (status -15) instead of a drain. A loaded machine may take seconds to get there."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            status = Path(f"/proc/{process.pid}/status").read_text()
            line = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
            if int(line[7:], 16) >> (sig - 1) & 1:
                return
        time.sleep(0.05)
    if process.poll() is None:
        raise AssertionError(f"the worker never installed its {sig.name} handler")


def stop(process: subprocess.Popen[bytes], sig: signal.Signals) -> int:
    """Send ``sig`` and wait for the exit status; a SIGTERM waits for the worker's handler, so
    a worker still starting drains instead of dying by the signal."""
    if sig is signal.SIGTERM:
        wait_until_catching(process, sig)
    process.send_signal(sig)
    try:
        return process.wait(90)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)  # the worker logs every task's stack
        time.sleep(3)
        process.kill()
        process.wait(10)
        raise AssertionError(
            f"worker did not stop in 90 s:\n{stderr_tail(process, 12_000)}"
        ) from None


def stderr_tail(process: subprocess.Popen[bytes], chars: int = 3000) -> str:
    path = LOGS.get(process.pid)
    return path.read_text(errors="replace")[-chars:] if path is not None else ""


async def results(settings: Settings, count: int, timeout_s: float = 300) -> Collected:
    return await read_topic(
        settings.kafka_bootstrap or "",
        settings.topics.results,
        until_keys=count,
        timeout_s=timeout_s,
    )


def assert_one_result_each(collected: Collected, job_ids: set[str]) -> int:
    """Every job has results, all copies the same stored one, succeeded; returns the copies."""
    assert set(collected.by_key) == job_ids, len(set(collected.by_key) ^ job_ids)
    for key, copies in collected.by_key.items():
        assert len({c["completed_at"] for c in copies}) == 1, f"{key} has two different results"
        assert copies[0]["status"] == "succeeded", copies[0]
    return sum(len(c) for c in collected.by_key.values())


async def running_jobs_of(settings: Settings, worker_id: str) -> int:
    """Jobs the ledger shows as claimed by ``worker_id`` and not finished (its in-flight)."""
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            statement = select(func.count()).where(
                JobRow.status == RowStatus.RUNNING.value, JobRow.lease_owner == worker_id
            )
            return int((await conn.execute(statement)).scalar_one())
    finally:
        await engine.dispose()


async def spend_matches_usage_events(settings: Settings, tenant: str, jobs: int) -> dict[str, Any]:
    """The ledger's spend of ``tenant`` equals the sum over distinct usage events read from the
    usage topic (nano-USD, exact), with at least one event per job; returns the figures."""
    events: dict[str, int] = {}
    for _ in range(20):
        usage = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.usage, until_keys=10**9, timeout_s=3
        )
        events = {e["event_id"]: to_nano(e["cost_usd"]) for e in usage.by_key.get(tenant, [])}
        if len(events) >= jobs:
            break
    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            statement = select(func.coalesce(func.sum(UsageRow.cost_nusd), 0), func.count())
            ledger_nusd, ledger_events = (
                await conn.execute(statement.where(UsageRow.tenant == tenant))
            ).one()
    finally:
        await engine.dispose()
    assert len(events) == ledger_events >= jobs, (len(events), ledger_events, jobs)
    assert sum(events.values()) == int(ledger_nusd), (sum(events.values()), ledger_nusd)
    return {"usage_events": len(events), "spend_nusd": int(ledger_nusd)}
