"""A job record's timestamp is the producer's to choose (CreateTime): one in the far future
(year 287168) made ``headway audit`` fail for its whole tenant ("year 287168 is out of
range"). A record is never submitted after its job completed: the audit record's
``submitted_at`` is clamped to its ``completed_at`` when it is written, and an out-of-range
instant already stored is read as the nearest one a date can hold (the tenant's trail reads)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from broker.config import development_config
from broker.settings import Settings
from schemas.jobs import Priority
from tests.helpers import chat_job, read_topic, running_worker
from tests.hostile.ledger_rows import T0, Done, store_finished
from workers.audit import rows as audit_rows
from workers.cli.main import app
from workers.devstack.simulator import SimulatorServer
from workers.ledger.database.engine import create_engine

YEAR_287168_S = 9_000_000_000_000.0  # what a record timestamp of 9e15 ms reads as


def audit_json(*args: str) -> list[dict[str, object]]:
    ran = CliRunner().invoke(app, ["audit", "--json", *args])
    assert ran.exit_code == 0, (ran.output, ran.exception)
    return [json.loads(line) for line in ran.output.splitlines()]


async def test_a_far_future_submitted_at_already_stored_does_not_break_the_tenants_trail(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEADWAY_DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "250")
    jobs = [  # stored as they came, by a worker from before the clamp at write
        Done("acme", "far", "b", submitted_at=YEAR_287168_S, as_is=True),
        Done("acme", "past", "b", submitted_at=-YEAR_287168_S, as_is=True),
        Done("acme", "fine", "b"),
    ]
    await store_finished(database_url, jobs)

    records = await asyncio.to_thread(audit_json, "--tenant", "acme")
    submitted = {r["job_id"]: r["submitted_at"] for r in records}
    assert submitted["far"] == "9999-12-31T23:59:59.999999Z"
    assert submitted["past"] == "0001-01-01T00:00:00Z"
    assert submitted["fine"] == datetime.fromtimestamp(T0 - 5, UTC).isoformat().replace(
        "+00:00", "Z"
    )
    table = await asyncio.to_thread(CliRunner().invoke, app, ["audit", "--tenant", "acme"])
    assert table.exit_code == 0, (table.output, table.exception)
    assert "far" in table.output and "fine" in table.output


async def test_a_submitted_at_after_completion_is_written_as_the_completion(
    sqlite_url: str,
) -> None:
    await store_finished(sqlite_url, [Done("acme", "far", "b", submitted_at=YEAR_287168_S)])
    engine = create_engine(sqlite_url)
    try:
        [row] = await audit_rows.read(engine, "acme")
    finally:
        await engine.dispose()
    assert row["submitted_at"] == row["completed_at"] == T0


async def test_a_record_dated_ahead_of_the_worker_is_audited_as_submitted_no_later_than_done(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url)
    bootstrap = settings.kafka_bootstrap or ""
    ahead_ms = int((time.time() + 50 * 60) * 1000)  # 50 minutes: every broker takes it
    async with running_worker(settings, development_config(simulator.base_url)):
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            value = json.dumps(chat_job("ahead", batch_id="b")).encode()
            topic = settings.topics.jobs(Priority.NORMAL)
            await producer.send_and_wait(topic, value, key=b"ahead", timestamp_ms=ahead_ms)
        finally:
            await producer.stop()
        await read_topic(bootstrap, settings.topics.results, until_keys=1)
        engine = create_engine(sqlite_url)
        try:
            for _ in range(100):
                found = await audit_rows.read(engine, "demo", job_id="ahead")
                if found:
                    break
                await asyncio.sleep(0.05)
        finally:
            await engine.dispose()
    [row] = found
    assert row["submitted_at"] <= row["completed_at"] < ahead_ms / 1000
