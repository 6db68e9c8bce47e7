"""Fixtures that start real components — the embedded broker, PostgreSQL databases, the
simulator — and clean them up. Every test gets its own topic prefix, so topics never collide."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.embedded import EmbeddedKafka
from broker.settings import Settings
from workers.ledger.db import upgrade
from workers.simulator import SimulatorConfig, SimulatorServer

POSTGRES_URL = os.environ.get(
    "HEADWAY_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def kafka() -> Iterator[EmbeddedKafka]:
    """One embedded Tansu broker for the session (tests isolate by topic prefix)."""
    broker = EmbeddedKafka()
    broker.start()
    asyncio.run(broker.wait_ready())
    yield broker
    broker.stop()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite ledger in this test's temporary directory."""
    url = f"sqlite+aiosqlite:///{tmp_path}/ledger.db"
    await upgrade(url)
    return url


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; skips (fails in CI) when unreachable."""
    import asyncpg

    dsn = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
    try:
        admin = await asyncpg.connect(dsn, timeout=3)
    except Exception as error:
        if IN_CI:
            raise RuntimeError(f"PostgreSQL is required in CI but unreachable: {error}") from error
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_URL}: {error}")
    name = f"headway_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = POSTGRES_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database for this test."""
    async with postgres_database() as url:
        await upgrade(url)
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each test that takes this runs on SQLite and on PostgreSQL, migrated to head."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/ledger.db"
        await upgrade(url)
        yield url
        return
    async with postgres_database() as url:
        await upgrade(url)
        yield url


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimulatorConfig(seed=7)) as server:
        yield server


@pytest.fixture
def make_settings(kafka: EmbeddedKafka, prefix: str) -> Callable[..., Settings]:
    """Settings for this test: its own topics, fast commits, short grace periods."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "kafka_bootstrap": kafka.bootstrap,
            "topic_prefix": prefix,
            "consumer_group": f"{prefix}-workers",
            "job_partitions": 4,
            "internal_partitions": 2,
            "concurrency": 32,
            "commit_interval_ms": 50,
            "session_timeout_ms": 6000,
            "revoke_grace_s": 5.0,
            "shutdown_grace_s": 5.0,
            "retry_initial_s": 0.01,
            "retry_max_wait_s": 0.2,
            "config": Path("/nonexistent/headway.toml"),
        }
        values.update(overrides)
        if "topic_prefix" in overrides and "consumer_group" not in overrides:
            # a second worker on other topics joins its own group: a group another worker of
            # the test just left would wait for that member's session to lapse
            values["consumer_group"] = f"{overrides['topic_prefix']}-workers"
        return Settings(**values)

    return build


@pytest.fixture
async def headway_worker(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> AsyncIterator[tuple[str, str]]:
    """A running worker on the development config; yields (bootstrap, topic prefix) only, for
    tests that must talk to it like an outside client would."""
    from broker.config import development_config
    from tests.helpers import running_worker

    settings = make_settings(database_url=sqlite_url)
    async with running_worker(settings, development_config(simulator.base_url)):
        yield settings.kafka_bootstrap or "", settings.topic_prefix
