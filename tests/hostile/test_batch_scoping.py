"""Batch ids are chosen by producers: two tenants may both call a batch ``nightly``. A read by
batch — ``headway results``, ``status``, a results subscription (the CLI's ``--group``, the
client's ``subscribe`` and ``results``, a FastStream handler) — is one tenant's: ``--tenant``
names it, and without it the command refuses unless the batch id is exactly one tenant's,
saying how many tenants it has. ``cancel`` and ``budget set`` name their tenant always, and act
on that tenant's batch only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker
from typer.testing import CliRunner

from broker.admin import create_topics
from broker.client import HeadwayClient
from broker.config import development_config
from broker.errors import UnscopedRead
from broker.faststream import HeadwayFastStream
from broker.settings import Settings
from broker.subscription import Subscription
from broker.topics import result_headers
from tests.helpers import chat_job, point_cli_at
from tests.hostile.ledger_rows import Done, store_finished
from workers.cli.main import app

SHARED = "nightly"
JOBS = [
    Done("acme", "a-1", SHARED),
    Done("acme", "a-2", SHARED),
    Done("zeta", "z-1", SHARED),
    Done("acme", "a-solo", "solo"),
]


def run(*args: str) -> tuple[int, str, BaseException | None]:
    ran = CliRunner().invoke(app, list(args))
    return ran.exit_code, ran.output, ran.exception


async def cli(*args: str) -> tuple[int, str, BaseException | None]:
    return await asyncio.to_thread(run, *args)


def refused(outcome: tuple[int, str, BaseException | None], tenants: int) -> bool:
    code, _, error = outcome
    return (
        code != 0
        and isinstance(error, UnscopedRead)
        and f"batch '{SHARED}' has jobs of {tenants} tenants" in str(error)
        and "--tenant" in str(error)
    )


@pytest.fixture
async def shared_batch(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HEADWAY_DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "250")
    await store_finished(database_url, JOBS)
    return database_url


def flat(output: str) -> str:
    """The output with each run of whitespace as one space (a wrapped title reads whole)."""
    return " ".join(output.split())


def job_ids(output: str) -> list[str]:
    return sorted(json.loads(line)["job_id"] for line in output.splitlines())


async def test_results_of_a_batch_are_one_tenants(shared_batch: str) -> None:
    code, out, error = await cli("results", "--batch", SHARED, "--tenant", "acme")
    assert code == 0, (out, error)
    assert job_ids(out) == ["a-1", "a-2"]
    code, out, error = await cli(
        "results", "--batch", SHARED, "--tenant", "zeta", "--format", "openai-batch"
    )
    assert code == 0, (out, error)
    assert [json.loads(line)["custom_id"] for line in out.splitlines()] == ["z-1"]


async def test_results_without_tenant_refuse_a_batch_id_two_tenants_share(
    shared_batch: str,
) -> None:
    assert refused(await cli("results", "--batch", SHARED), tenants=2)
    code, out, error = await cli("results", "--batch", "solo")  # one tenant's: it is theirs
    assert code == 0, (out, error)
    assert job_ids(out) == ["a-solo"]
    code, _, error = await cli("results", "--batch", "nobody")
    assert code != 0 and isinstance(error, UnscopedRead)
    assert "batch 'nobody' has jobs of 0 tenants" in str(error)


async def test_status_of_a_batch_is_one_tenants(shared_batch: str) -> None:
    assert refused(await cli("status", "--batch", SHARED, "--no-lanes"), tenants=2)
    code, out, error = await cli("status", "--batch", SHARED, "--tenant", "zeta", "--no-lanes")
    assert code == 0, (out, error)
    assert f"batch {SHARED}: 1/1 finished" in flat(out) and "tenant │ zeta" in flat(out)
    code, out, error = await cli("status", "--batch", "solo", "--no-lanes")
    assert code == 0, (out, error)
    assert "batch solo: 1/1 finished" in flat(out) and "tenant │ acme" in flat(out)


async def test_status_counts_queued_jobs_of_its_tenant_only_and_refuses_a_shared_id(
    make_settings: Callable[..., Settings], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(database_url=sqlite_url)
    point_cli_at(settings, monkeypatch)
    monkeypatch.setenv("COLUMNS", "250")
    await create_topics(settings, development_config("http://127.0.0.1:9"))
    async with HeadwayClient(settings) as client:
        await client.submit_many([chat_job(f"d-{i}", batch_id=SHARED) for i in range(3)])
        await client.submit_many(
            [chat_job(f"x-{i}", batch_id=SHARED, tenant="default") for i in range(2)]
        )
        await client.submit_many([chat_job("only", batch_id="solo")])
    assert refused(await cli("status", "--batch", SHARED), tenants=2)
    code, out, error = await cli("status", "--batch", SHARED, "--tenant", "default")
    assert code == 0, (out, error)
    assert f"batch {SHARED}: 0/2 finished" in flat(out) and "tenant │ default" in flat(out)
    code, out, error = await cli("status", "--batch", "solo")
    assert code == 0, (out, error)
    assert "batch solo: 0/1 finished" in flat(out) and "tenant │ demo" in flat(out)


def result_record(job_id: str, tenant: str, batch: str) -> bytes:
    completed = datetime.now(UTC).isoformat()
    values = {"job_id": job_id, "tenant": tenant, "batch_id": batch, "status": "succeeded"}
    return json.dumps({**values, "completed_at": completed}).encode()


async def publish_results(settings: Settings) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for job in JOBS:
            assert job.batch_id is not None
            value = result_record(job.job_id, job.tenant, job.batch_id)
            headers = result_headers(job.tenant, job.batch_id)
            await producer.send_and_wait(settings.topics.results, value, headers=headers)
        # one written by an older headway, without headers: filtered by its fields
        value = result_record("z-old", "zeta", SHARED)
        await producer.send_and_wait(settings.topics.results, value)
    finally:
        await producer.stop()


async def test_a_subscription_by_batch_names_its_tenant_and_reads_only_its_results(
    make_settings: Callable[..., Settings], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(database_url=sqlite_url)
    await create_topics(settings, development_config("http://127.0.0.1:9"))
    await publish_results(settings)
    client = HeadwayClient(settings)
    with pytest.raises(UnscopedRead, match="names its tenant"):
        Subscription(settings, "g0", settings.topics.results, batch=SHARED)
    with pytest.raises(UnscopedRead, match="names its tenant"):
        client.subscribe("g0", batch=SHARED)
    with pytest.raises(UnscopedRead, match="names its tenant"):
        [r async for r in client.results(SHARED, idle_timeout_s=1)]
    with pytest.raises(UnscopedRead, match="names its tenant"):
        HeadwayFastStream(KafkaBroker(settings.kafka_bootstrap or ""), settings.topics).results(
            "g0", batch=SHARED
        )

    async with client.subscribe("g1", batch=SHARED, tenant="zeta", idle_timeout_s=2) as found:
        zetas = sorted([result.job_id async for result in found])
    assert zetas == ["z-1", "z-old"]
    read = [r.job_id async for r in client.results(SHARED, tenant="acme", idle_timeout_s=2)]
    assert sorted(read) == ["a-1", "a-2"]


async def test_the_cli_subscription_filters_by_the_tenant_it_resolved_or_was_given(
    make_settings: Callable[..., Settings], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(database_url=sqlite_url)
    point_cli_at(settings, monkeypatch)
    await create_topics(settings, development_config("http://127.0.0.1:9"))
    await publish_results(settings)
    await store_finished(sqlite_url, [Done("zeta", "z-1", SHARED)])  # the ledger knows zeta's

    code, out, error = await cli("results", "--group", "g2", "--batch", SHARED)
    assert code == 0, (out, error)
    assert job_ids(out) == ["z-1", "z-old"]  # acme's results on the topic are not read
    code, out, error = await cli("results", "--group", "g3", "--batch", SHARED, "--tenant", "acme")
    assert code == 0, (out, error)
    assert job_ids(out) == ["a-1", "a-2"]
    await store_finished(sqlite_url, [Done("acme", "a-1", SHARED)])
    assert refused(await cli("results", "--group", "g4", "--batch", SHARED), tenants=2)


async def test_cancel_and_budget_set_name_their_tenant(shared_batch: str) -> None:
    for command in (
        ["cancel", "--batch", SHARED],
        ["budget", "set", "--batch", SHARED, "--usd", "1"],
    ):
        code, out, _ = await cli(*command)
        assert code == 2 and "--tenant" in out
