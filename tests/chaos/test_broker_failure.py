"""A Kafka broker dies during a backfill. Three Apache Kafka brokers (replication 3,
min.insync.replicas 2), three `headway worker` processes on PostgreSQL, the idempotent
producer: at ~30 % of the results one broker is killed with SIGKILL — the one leading the most
job partitions, or the active KRaft controller — and restarted at ~60 %, while a producer keeps
submitting the rest of the backfill with ``HeadwayClient.submit_many``.

Invariants (docs/reliability.md): every job gets one result (copies identical), provider calls
exceed the jobs by no more than the stated bound, spend equals the distinct usage events, no
worker exits, and the job lane holds each submitted job exactly once (no loss, no duplicate
record from the producer's retries)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.admin import create_topics
from broker.client import HeadwayClient
from broker.config import load_config
from broker.settings import Settings
from schemas.jobs import Priority
from tests.apache_kafka import ApacheKafkaCluster
from tests.chaos.conftest import size
from tests.chaos.processes import (
    assert_one_result_each,
    results,
    spawn_worker,
    spend_matches_usage_events,
    stderr_tail,
    stop,
    write_config,
)
from tests.chaos.progress import watching
from tests.helpers import chat_job, read_topic
from workers.devstack.simulator import SimulatorServer

JOBS = size(3000, 10_000)
WORKERS = 3
CONCURRENCY = 32
CHUNK = 100  # jobs per submit_many while the broker is down


async def victim_of(cluster: ApacheKafkaCluster, settings: Settings, which: str) -> int:
    if which == "controller":
        return cluster.active_controller()
    leaders = await cluster.partition_leaders(list(settings.topics.job_lanes))
    return max(leaders, key=lambda node: leaders[node])


@pytest.mark.parametrize("which", ["most-leaders", "controller"])
async def test_a_broker_killed_and_restarted_during_a_backfill_loses_and_repeats_nothing(
    which: str,
    three_brokers: ApacheKafkaCluster,
    make_settings: Callable[..., Settings],
    postgres_url: str,
    simulator: SimulatorServer,
    tmp_path: Path,
    figures: Callable[..., None],
) -> None:
    simulator.config.latency_ms = 50
    settings = make_settings(
        cluster=three_brokers,
        database_url=postgres_url,
        config=write_config(tmp_path, simulator),
        concurrency=CONCURRENCY,
        job_partitions=6,
        lease_s=3.0,
    )
    report = await create_topics(settings, load_config(settings.config))
    assert (report.replication_factor, report.min_insync_replicas) == (3, 2)
    jobs = [chat_job(f"job-{i}", batch_id="backfill") for i in range(JOBS)]
    first, rest = jobs[: JOBS // 2], jobs[JOBS // 2 :]
    bootstrap = settings.kafka_bootstrap or ""
    async with HeadwayClient(settings) as client:
        await client.submit_many(first)
    workers = [spawn_worker(settings, worker_id=f"w{n}") for n in range(WORKERS)]
    started = time.monotonic()
    try:
        async with watching(bootstrap, settings.topics.results) as progress:
            await progress.reached(int(JOBS * 0.3))
            victim = await victim_of(three_brokers, settings, which)
            three_brokers.kill(victim)
            progress.mark("killed")
            async with HeadwayClient(settings) as client:  # the producer carries on
                for at in range(0, len(rest), CHUNK):
                    await client.submit_many(rest[at : at + CHUNK])
            submitted_s = time.monotonic() - progress.marks["killed"]
            await progress.reached(int(JOBS * 0.6))
            three_brokers.restart(victim)
            progress.mark("restarted")
            await three_brokers.ready()
            await progress.reached(JOBS)
            rates = progress.figures("killed", "restarted")
        exited = {p.pid: p.poll() for p in workers if p.poll() is not None}
        assert not exited, f"workers exited during the failure: {exited}"
    finally:
        for process in workers:
            code = await asyncio.to_thread(stop, process, signal.SIGTERM)
            assert code == 0, stderr_tail(process)
    elapsed = time.monotonic() - started
    collected = await results(settings, JOBS)
    job_ids = {f"job-{i}" for i in range(JOBS)}
    copies = assert_one_result_each(collected, job_ids)
    calls = sum(simulator.stats.jobs.values())
    assert set(simulator.stats.jobs) == job_ids
    # no worker died: a job is called again only when its claim's lease lapsed while it was
    # cut off from the ledger, never for Kafka's sake; the bound is what is in flight
    assert calls <= JOBS + WORKERS * CONCURRENCY, calls
    lane = await read_topic(
        bootstrap, settings.topics.jobs(Priority.NORMAL), until_keys=JOBS, decode=False
    )
    assert lane.distinct() == JOBS and len(lane.records) == JOBS, (
        f"{len(lane.records)} job records for {lane.distinct()} jobs"
    )
    spend = await spend_matches_usage_events(settings, "demo", JOBS)
    figures(
        broker_killed=which,
        victim_node=victim,
        jobs=JOBS,
        workers=WORKERS,
        distinct_results=len(collected.by_key),
        result_messages=copies,
        provider_calls=calls,
        repeated_calls=calls - JOBS,
        job_records_in_lane=len(lane.records),
        producer_submitted_during_outage_s=round(submitted_s, 1),
        elapsed_s=round(elapsed, 1),
        **rates,
        **spend,
    )
