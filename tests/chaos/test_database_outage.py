"""The database unreachable for 10 s under load: the worker stops taking jobs and committing
offsets and reports not-ready; when the database is back it recovers by itself, and nothing is
lost or duplicated in the results. A real worker, PostgreSQL behind a TCP proxy that is cut,
the embedded broker, real HTTP."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.engine import make_url

from broker.client import HeadwayClient
from broker.config import load_config
from broker.settings import Settings
from tests.chaos.conftest import size
from tests.chaos.processes import assert_one_result_each, results, write_config
from tests.chaos.tcpproxy import TcpProxy
from tests.helpers import chat_job, running_worker
from workers.devstack.simulator import SimulatorServer

JOBS = size(1500, 5000)
OUTAGE_S = 10.0
CONCURRENCY = 64


async def committed_total(settings: Settings) -> int:
    """The sum of the worker group's committed offsets over the job topics."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        total = 0
        for topic in settings.topics.job_lanes:
            for partition in range(settings.job_partitions):
                total += await consumer.committed(TopicPartition(topic, partition)) or 0
        return total
    finally:
        await consumer.stop()


def dump_tasks(path: Path) -> None:
    """Every asyncio task's stack, to see where a stalled worker waits."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        print(f"--- {task.get_name()} {task.get_coro()!r}", file=out)
        task.print_stack(limit=12, file=out)
    path.parent.mkdir(exist_ok=True)
    path.write_text(out.getvalue())


async def wait_for_ready(client: httpx.AsyncClient, ready: bool, timeout_s: float) -> float:
    """Seconds until /readyz says ``ready``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        response = await client.get("/readyz")
        if (response.status_code == 200) is ready:
            assert response.json()["ready"] is ready
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz did not turn {'ready' if ready else 'not ready'}")


async def test_a_database_outage_pauses_work_and_the_worker_recovers_by_itself(
    make_settings: Callable[..., Settings],
    postgres_url: str,
    simulator: SimulatorServer,
    tmp_path: Path,
    figures: Callable[..., None],
) -> None:
    simulator.config.latency_ms = 20
    url = make_url(postgres_url)
    async with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        settings = make_settings(
            database_url=proxied,
            config=write_config(tmp_path, simulator),
            concurrency=CONCURRENCY,
            http_port=0,
            ledger_probe_s=0.5,
        )
        config = load_config(settings.config)
        async with running_worker(settings, config) as worker, HeadwayClient(settings) as client:
            await client.submit_many(chat_job(f"job-{i}") for i in range(JOBS))
            assert worker.probes is not None
            probes = httpx.AsyncClient(base_url=f"http://127.0.0.1:{worker.probes.port}")
            async with probes:
                await results(settings, JOBS // 5)
                await proxy.cut()
                cut_at = time.monotonic()
                not_ready_s = await wait_for_ready(probes, False, OUTAGE_S)
                await asyncio.sleep(1.0)  # calls open at the cut end; their finishes wait
                calls_early, commits_early = simulator.stats.calls, await committed_total(settings)
                await asyncio.sleep(OUTAGE_S - (time.monotonic() - cut_at))
                calls_late, commits_late = simulator.stats.calls, await committed_total(settings)
                report = (await probes.get("/readyz")).json()
                await proxy.restore()
                restored_at = time.monotonic()
                ready_again_s = await wait_for_ready(probes, True, 60)
                collected = await results(settings, JOBS, timeout_s=120)
                if collected.distinct() < JOBS:
                    dump_tasks(Path("build/db-outage-stall.txt"))
                finished_s = time.monotonic() - restored_at
                assert (await probes.get("/healthz")).status_code == 200
                stalled = {  # what to look at if work did not resume (seen once, full size)
                    "in_flight": sum(worker.in_flight.values()),
                    "buffered": len(worker.scheduler),
                    "parked": len(worker.parked),
                    "unfinished": worker.tracker.unfinished(),
                    "ready": (await probes.get("/readyz")).json(),
                    "pool": worker.ledger.engine.pool.status(),
                }

    assert not report["ledger"]["ok"] and report["kafka"]["ok"]
    assert calls_late == calls_early, "jobs were started while the database was unreachable"
    assert commits_late == commits_early, "offsets were committed during the outage"
    assert collected.distinct() == JOBS, (collected.distinct(), stalled)
    copies = assert_one_result_each(collected, {f"job-{i}" for i in range(JOBS)})
    calls = sum(simulator.stats.jobs.values())
    assert max(simulator.stats.jobs.values()) == 1  # no job called twice
    figures(
        jobs=JOBS,
        outage_s=OUTAGE_S,
        seconds_to_not_ready=round(not_ready_s, 2),
        seconds_to_ready_after_restore=round(ready_again_s, 2),
        seconds_to_all_results_after_restore=round(finished_s, 1),
        provider_calls_during_outage=calls_late - calls_early,
        offsets_committed_during_outage=commits_late - commits_early,
        provider_calls=calls,
        distinct_results=len(collected.by_key),
        result_messages=copies,
    )
