"""Budget alerts exactly once with two worker processes and a SIGKILL in the middle: a batch
spends a tenant's budget past six thresholds while two workers notice and publish alerts; one
is killed mid-batch and replaced. On the alerts topic every threshold the spend crossed has one
event id — copies of an event (a kill between publishing and marking) carry that same id, and
no threshold has two. Real worker processes, PostgreSQL, the embedded broker or Apache Kafka."""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from broker.admin import create_topics
from broker.client import HeadwayClient
from broker.config import load_config
from broker.settings import Settings
from tests.chaos.conftest import size
from tests.chaos.processes import results, spawn_worker, stderr_tail, stop
from tests.helpers import chat_job, read_topic
from workers.admission.budget_alerts import LEASE_S
from workers.devstack.simulator import SimulatorServer

JOBS = size(1500, 6000)
THRESHOLDS = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06)


def config(tmp_path: Path, simulator: SimulatorServer) -> Path:
    path = tmp_path / "headway.toml"
    path.write_text(
        f"budget_alerts = {list(THRESHOLDS)}\n"
        f'[providers.sim]\ntype = "simulator"\nbase_url = "{simulator.base_url}"\n'
        '[routes.summarize]\nkind = "chat"\n'
        '[[routes.summarize.deployments]]\nprovider = "sim"\nmodel = "sim-chat"\n'
        "input_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n"
        '[tenants.demo]\nbudget_usd = 1.0\nbudget_period = "total"\n'
    )
    return path


async def alerted(settings: Settings, crossed: list[float]) -> dict[float, set[str]]:
    """Each alerted threshold's event ids, once every crossed one is on the topic (a lease
    held by the killed worker can delay publishing by ``budget_alerts.LEASE_S``)."""
    ids: dict[float, set[str]] = defaultdict(set)
    for _ in range(int(LEASE_S) + 30):
        found = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.alerts, until_keys=1, timeout_s=5
        )
        ids = defaultdict(set)
        for event in found.by_key.get("demo", []):
            assert event["kind"] == "budget_threshold" and event["period"] == "total"
            ids[event["threshold"]].add(event["event_id"])
        if sorted(ids) == crossed:
            return ids
        await asyncio.sleep(1.0)
    return ids


async def test_each_threshold_is_alerted_once_across_two_workers_and_a_sigkill(
    make_settings: Callable[..., Settings],
    postgres_url: str,
    simulator: SimulatorServer,
    tmp_path: Path,
) -> None:
    simulator.config.latency_ms = 10
    settings = make_settings(
        database_url=postgres_url,
        config=config(tmp_path, simulator),
        concurrency=32,
        lease_s=3.0,
        budget_gauges_s=0.2,
    )
    await create_topics(settings, load_config(settings.config))
    async with HeadwayClient(settings) as client:
        await client.submit_many(chat_job(f"job-{i}") for i in range(JOBS))
    workers = [spawn_worker(settings, worker_id=f"{settings.topic_prefix}-w{n}") for n in (1, 2)]
    try:
        await results(settings, JOBS // 2)
        await asyncio.to_thread(stop, workers.pop(0), signal.SIGKILL)
        workers.append(spawn_worker(settings, worker_id=f"{settings.topic_prefix}-w3"))
        collected = await results(settings, JOBS)
        spent = sum(r[0]["cost_usd"] for r in collected.by_key.values())
        crossed = [t for t in THRESHOLDS if spent >= t]
        ids = await alerted(settings, crossed)
    finally:
        for process in workers:
            code = await asyncio.to_thread(stop, process, signal.SIGTERM)
            assert code == 0, stderr_tail(process)
    assert len(crossed) >= 3, spent  # the batch spends past several thresholds
    assert sorted(ids) == crossed, (sorted(ids), spent)
    assert all(len(found) == 1 for found in ids.values()), ids
