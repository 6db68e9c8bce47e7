"""Durable result subscriptions: a consumer group that resumes where it left off, commits only
what its reader handled (at least once, also across kill -9), and passes over other batches'
and tenants' results by their headers, without parsing them."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from broker.admin import create_topics
from broker.client import HeadwayClient
from broker.config import development_config
from broker.settings import Settings
from broker.topics import result_headers
from tests.helpers import chat_job, read_topic, running_worker
from tests.integration.test_cli import cli_env
from workers.devstack.simulator import SimulatorServer

pytestmark = pytest.mark.integration


def result(job_id: str, tenant: str = "demo", batch: str | None = "b") -> bytes:
    return json.dumps(
        {
            "job_id": job_id,
            "tenant": tenant,
            "batch_id": batch,
            "status": "succeeded",
            "completed_at": datetime.now(UTC).isoformat(),
        }
    ).encode()


async def publish_results(settings: Settings, records: list[tuple[bytes, list[object]]]) -> None:
    await create_topics(settings, development_config("http://127.0.0.1:9"))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for value, headers in records:
            await producer.send_and_wait(settings.topics.results, value, headers=headers)
    finally:
        await producer.stop()


def mine(job_id: str) -> tuple[bytes, list[object]]:
    return result(job_id), list(result_headers("demo", "b"))


async def test_a_group_resumes_after_what_it_handled_and_passes_over_the_rest(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings()
    records = [mine(f"b-{i}") for i in range(20)]
    other = result_headers("demo", "other")
    records += [(result(f"o-{i}", batch="other"), other) for i in range(5)]
    records += [(result(f"x-{i}", tenant="x"), result_headers("x", "b")) for i in range(5)]
    # told apart by its headers: never parsed, so never warned about
    records.append((b"\xff not json", result_headers("demo", "other")))
    records.append((result("legacy-0"), []))  # an older headway's: no headers, parsed
    newer = json.loads(mine("newer-0")[0]) | {"region": "eu-west"}  # a newer headway's
    records.append((json.dumps(newer).encode(), result_headers("demo", "b")))
    await publish_results(settings, records)
    client = HeadwayClient(settings)
    first: list[str] = []
    raw: dict[str, bytes] = {}
    with caplog.at_level(logging.WARNING, logger="broker.subscription"):
        async with client.subscribe("pipeline", batch="b", tenant="demo") as results:
            async for found in results:
                first.append(found.job_id)
                raw[found.job_id] = results.raw
                if len(first) == 8:
                    break
            passed_over = results.passed_over
        async with client.subscribe(
            "pipeline", batch="b", tenant="demo", idle_timeout_s=2
        ) as results:
            rest = []
            async for found in results:
                rest.append(found.job_id)
                raw[found.job_id] = results.raw
            passed_over += results.passed_over
    assert len(first) == 8 and not set(first) & set(rest)  # the 8 handled were committed
    expected = [f"b-{i}" for i in range(20)] + ["legacy-0", "newer-0"]
    assert sorted(first + rest) == sorted(expected)
    assert json.loads(raw["newer-0"])["region"] == "eu-west"  # as written, the new field kept
    assert passed_over == 11  # each foreign record once: those passed over are committed too
    assert "not a JobResult" not in caplog.text


async def test_a_reader_killed_mid_way_resumes_and_misses_nothing(
    make_settings: Callable[..., Settings], tmp_path: object
) -> None:
    settings = make_settings()
    await publish_results(settings, [mine(f"b-{i}") for i in range(300)])
    command = [sys.executable, "-m", "workers", "results", "--group", "g", "--batch", "b"]
    command += ["--tenant", "demo"]
    reader = await asyncio.create_subprocess_exec(
        *command, "--follow", env=cli_env(settings), stdout=asyncio.subprocess.PIPE
    )
    assert reader.stdout is not None
    before: list[str] = []
    async with asyncio.timeout(120):
        while len(before) < 150:  # written and flushed one by one
            before.append(json.loads(await reader.stdout.readline())["job_id"])
    await asyncio.sleep(1.5)  # a commit or two happen meanwhile
    reader.send_signal(signal.SIGKILL)
    await reader.wait()
    async with asyncio.timeout(30):  # what it wrote before it died (what a pipeline stored)
        before += [json.loads(line)["job_id"] for line in (await reader.stdout.read()).splitlines()]
    after = await asyncio.to_thread(
        subprocess.run, command, env=cli_env(settings), capture_output=True, text=True, timeout=120
    )
    assert after.returncode == 0, after.stderr
    again = [json.loads(line)["job_id"] for line in after.stdout.splitlines()]
    assert set(before) | set(again) == {f"b-{i}" for i in range(300)}
    assert len(again) < 300  # it resumed: not read from the start


async def test_results_published_by_a_worker_carry_their_tenant_and_batch(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url)
    async with (
        running_worker(settings, development_config(simulator.base_url)),
        HeadwayClient(settings) as client,
    ):
        await client.submit_many([chat_job("with", batch_id="b"), chat_job("without")])
        bootstrap = settings.kafka_bootstrap or ""
        seen = await read_topic(bootstrap, settings.topics.results, until_keys=2)
    headers = {r.key.decode(): dict(r.headers) for r in seen.records}
    assert headers["with"]["headway-tenant"] == b"demo"
    assert headers["with"]["headway-batch"] == b"b"
    assert "headway-batch" not in headers["without"]
