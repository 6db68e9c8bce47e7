"""`headway top` reads the workers' /metrics and shows what they did: jobs by status, tenant
and route, spend equal to the usage events, lanes, readiness; an unreachable worker is counted,
not fatal. A real worker, broker, HTTP and database."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from broker.client import HeadwayClient
from broker.config import development_config
from broker.settings import Settings
from tests.helpers import chat_job, read_topic, running_worker
from workers.cli.top import Snapshot, render, run_top
from workers.devstack.simulator import SimulatorServer

JOBS = 12


async def test_top_shows_a_finished_batch_by_tenant_route_and_status(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url, http_port=0)
    async with running_worker(settings, development_config(simulator.base_url)) as worker:
        async with HeadwayClient(settings) as client:
            await client.submit_many(chat_job(f"t-{i}") for i in range(JOBS))
        await read_topic(settings.kafka_bootstrap or "", settings.topics.results, until_keys=JOBS)
        usage = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.usage, until_keys=1
        )
        assert worker.probes is not None
        console = Console(record=True, width=160, force_terminal=False)
        urls = [f"http://127.0.0.1:{worker.probes.port}", "http://127.0.0.1:9/"]  # 2nd: down
        await run_top(urls, console, interval_s=0.2, frames=2)
    text = console.export_text()
    assert "workers 1/2 reachable, 1 ready" in text
    assert f"finished {JOBS}" in text
    row = next(line for line in text.splitlines() if "succeeded" in line)
    assert "demo" in row and "summarize" in row and f"{JOBS}" in row
    spend = sum(event["cost_usd"] for event in usage.by_key["demo"])
    assert f"{spend:,.6f}" in text
    for lane in ("high", "normal", "low"):
        assert lane in text


def metrics_text(succeeded: float) -> str:
    return (
        "# TYPE headway_jobs_total counter\n"
        f'headway_jobs_total{{status="succeeded",tenant="a",route="r"}} {succeeded}\n'
        "# TYPE headway_circuit_state gauge\n"
        'headway_circuit_state{deployment="sim/x"} 2\n'
    )


def test_rates_come_from_two_scrapes_and_a_restarted_worker_counts_from_zero() -> None:
    before, after, restarted = Snapshot(taken_at=0.0), Snapshot(taken_at=2.0), Snapshot(4.0)
    before.add(metrics_text(100))
    after.add(metrics_text(140))
    restarted.add(metrics_text(6))  # counters fell: the worker restarted
    console = Console(record=True, width=160)
    console.print(render(after, before))
    console.print(render(restarted, after))
    text = console.export_text()
    assert "20.0 jobs/s" in text  # (140 - 100) / 2 s
    assert "3.0 jobs/s" in text  # 6 / 2 s after the restart
    assert "sim/x open" in text
