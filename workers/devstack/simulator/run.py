"""Running the simulator as its own process (CLI, demo, benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx

from workers.devstack.simulator.server import SimulatorConfig, SimulatorServer


async def serve(config: SimulatorConfig, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with SimulatorServer(config, host, port) as server:
        print(f"simulator listening on {server.base_url}", flush=True)
        await stop.wait()


@contextlib.contextmanager
def simulator_process(
    port: int,
    *,
    latency_ms: float = 0,
    jitter_ms: float = 0,
    error_rate: float = 0,
    rpm: int | None = None,
) -> Iterator[str]:
    """Start ``headway simulator`` in a child process; yields its base URL."""
    args = [
        sys.executable,
        "-m",
        "workers.devstack.simulator",
        "--port",
        str(port),
        "--latency-ms",
        str(latency_ms),
        "--jitter-ms",
        str(jitter_ms),
        "--error-rate",
        str(error_rate),
    ]
    if rpm is not None:
        args += ["--rpm", str(rpm)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_up(base_url, process)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(base_url: str, process: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    stats = base_url.removesuffix("/v1") + "/_sim/stats"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"simulator exited early: {error[-2000:]}")
        try:
            httpx.get(stats, timeout=1).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"simulator at {base_url} did not come up")
