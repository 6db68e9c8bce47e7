"""Side by side with LiteLLM: the naive relay loop driving ``litellm.Router`` vs headway.

LiteLLM is installed in its own virtualenv (``build/litellm-venv``, created on first use
with pip from the package index) so it shares nothing with headway's dependencies;
``bench/litellm_relay.py`` runs there as a subprocess against the same embedded Kafka and the
same simulator. Throughput: the same preloaded chat jobs at the same concurrency, the two
sides alternating. Added latency: LiteLLM's router call minus a bare httpx POST of the same
body, paced, in its process; headway's from ``bench/added_latency.py``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

from bench.common import Rates, Stack, chat_jobs, preload, side_by_side
from bench.overhead import headway_rate
from schemas.jobs import Priority

ROOT = Path(__file__).parents[1]
VENV = ROOT / "build" / "litellm-venv"
SCRIPT = Path(__file__).with_name("litellm_relay.py")
PACKAGES = ["litellm", "aiokafka", "httpx"]


@dataclass
class LiteLLMLatency:
    router_p50_ms: float
    router_p99_ms: float
    bare_p50_ms: float
    bare_p99_ms: float

    @property
    def added_p50_ms(self) -> float:
        return self.router_p50_ms - self.bare_p50_ms

    @property
    def added_p99_ms(self) -> float:
        return self.router_p99_ms - self.bare_p99_ms


def python() -> Path:
    """The LiteLLM virtualenv's interpreter, created and installed on first use."""
    interpreter = VENV / "bin" / "python"
    if not (VENV / ".installed").exists():
        venv.create(VENV, with_pip=True, clear=True)
        subprocess.run([str(interpreter), "-m", "pip", "install", "--quiet", *PACKAGES], check=True)
        (VENV / ".installed").touch()
    return interpreter


def litellm_version() -> str:
    out = subprocess.run(
        [str(python()), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


async def _run(*args: str) -> dict[str, float]:
    process = await asyncio.create_subprocess_exec(
        str(python()), str(SCRIPT), *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"litellm relay failed: {err.decode()[-2000:]}")
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def litellm_rate(stack: Stack, jobs: int, concurrency: int) -> float:
    settings = stack.settings()
    await preload(settings, stack.config(), chat_jobs(jobs))
    result = await _run(
        "throughput",
        "--bootstrap",
        stack.bootstrap,
        "--jobs-topic",
        settings.topics.jobs(Priority.NORMAL),
        "--results-topic",
        settings.topics.results,
        "--group",
        f"{settings.topic_prefix}-litellm",
        "--simulator-url",
        stack.simulator_url,
        "--concurrency",
        str(concurrency),
        "--expected",
        str(jobs),
    )
    return result["jobs_per_s"]


async def litellm_latency(stack: Stack, rate: float = 200, seconds: float = 10) -> LiteLLMLatency:
    result = await _run(
        "latency",
        "--simulator-url",
        stack.simulator_url,
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
    )
    return LiteLLMLatency(**result)


async def measure(stack: Stack, jobs: int, concurrency: int, runs: int) -> list[Rates]:
    python()  # install before timing anything
    return await side_by_side(
        runs,
        lambda: headway_rate(stack, jobs, concurrency),
        lambda: litellm_rate(stack, jobs, concurrency),
        "litellm",
    )


if __name__ == "__main__":
    from bench.common import stack

    async def main() -> None:
        async with stack() as st:
            print("litellm", litellm_version())
            await measure(st, int(sys.argv[1]) if len(sys.argv) > 1 else 5000, 256, 1)
            print(await litellm_latency(st))

    asyncio.run(main())
