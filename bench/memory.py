"""(c) Worker memory (RSS) while a large backlog waits in Kafka."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Stack, chat_jobs, preload


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def worker_rss_with_backlog(
    stack: Stack, backlog: int, seconds: float = 20.0
) -> tuple[float, float]:
    """(peak RSS MB, RSS MB at the end) of a `headway worker` process while ``backlog`` jobs wait.

    The simulator answers in 500 ms, so the worker is busy and the backlog stays queued."""
    settings = stack.settings()
    config_path = Path(stack.workdir) / "memory.toml"
    config_path.write_text(
        f'[providers.sim]\ntype = "simulator"\nbase_url = "{stack.simulator_url}"\n'
        '[routes.summarize]\nkind = "chat"\n[[routes.summarize.deployments]]\n'
        'provider = "sim"\nmodel = "sim-chat"\n[tenants.default]\n'
    )
    await preload(settings, stack.config(), chat_jobs(backlog, tag="mem"))
    env = {
        **os.environ,
        "HEADWAY_KAFKA_BOOTSTRAP": stack.bootstrap,
        "HEADWAY_DATABASE_URL": settings.database_url,
        "HEADWAY_TOPIC_PREFIX": settings.topic_prefix,
        "HEADWAY_CONSUMER_GROUP": settings.consumer_group,
        "HEADWAY_CONFIG": str(config_path),
        "HEADWAY_SESSION_TIMEOUT_MS": "6000",
    }
    worker = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited on
        [sys.executable, "-m", "workers", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak = last = 0.0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            last = rss_mb(worker.pid)
            peak = max(peak, last)
            await asyncio.sleep(0.25)
    finally:
        worker.terminate()
        worker.wait(60)
    return peak, last
