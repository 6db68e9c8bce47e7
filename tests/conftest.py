"""Fixtures that start real components — Kafka, PostgreSQL databases, the simulator — and
clean them up. Every test gets its own topic prefix, so topics never collide.

``HEADWAY_TEST_KAFKA`` chooses the broker of the session's ``kafka`` fixture: ``tansu`` (the
embedded default, the fast tier) or ``apache`` (Apache Kafka 4.x in KRaft mode, idempotent
producers; tests/apache_kafka.py), with ``HEADWAY_TEST_KAFKA_BROKERS`` brokers (1 or 3).
Failure scenarios that kill brokers take the ``three_brokers`` fixture: a cluster of their own,
always Apache Kafka."""

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
from tests.apache_kafka import ApacheKafkaCluster, KafkaUnavailable
from workers.devstack.simulator import SimulatorConfig, SimulatorServer
from workers.ledger.database.engine import create_engine, upgrade
from workers.ledger.database.transactions import Transactions, transactions_for

POSTGRES_URL = os.environ.get(
    "HEADWAY_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
KAFKA = os.environ.get("HEADWAY_TEST_KAFKA", "tansu").lower()
# the session's Apache Kafka cluster: 1 broker, or 3 (replication 3, min.insync.replicas 2)
KAFKA_BROKERS = int(os.environ.get("HEADWAY_TEST_KAFKA_BROKERS", "1"))
if KAFKA not in ("tansu", "apache"):
    raise pytest.UsageError(f"HEADWAY_TEST_KAFKA must be tansu or apache, not {KAFKA!r}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers by what a test is, not by what its author remembered: every test in
    tests/integration is ``integration``, every one in tests/hostile ``hostile``; one on
    PostgreSQL is ``postgres``; one on its own three brokers needs Apache Kafka (``apache``)
    whatever the session's broker."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
        if "hostile" in item.path.parts:
            item.add_marker(pytest.mark.hostile)
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("database_url") == "postgres"
        if "postgres_url" in fixtures or on_postgres:
            item.add_marker(pytest.mark.postgres)
        if "three_brokers" in fixtures:
            item.add_marker(pytest.mark.apache)


def pytest_runtest_setup(item: pytest.Item) -> None:
    uses_own_cluster = "three_brokers" in getattr(item, "fixturenames", ())
    if item.get_closest_marker("apache") and KAFKA != "apache" and not uses_own_cluster:
        pytest.skip("runs on Apache Kafka only: HEADWAY_TEST_KAFKA=apache")


def apache_kafka(brokers: int) -> ApacheKafkaCluster:
    """A started Apache Kafka cluster; skips (fails in CI) where this machine cannot run one."""
    cluster = ApacheKafkaCluster(brokers)
    try:
        cluster.start()
    except KafkaUnavailable as error:
        cluster.stop()
        if IN_CI:
            raise
        pytest.skip(f"Apache Kafka unavailable: {str(error).splitlines()[0]}")
    return cluster


@pytest.fixture(scope="session")
def kafka() -> Iterator[EmbeddedKafka | ApacheKafkaCluster]:
    """One broker for the session (tests isolate by topic prefix): Tansu or Apache Kafka."""
    if KAFKA == "apache":
        cluster = apache_kafka(KAFKA_BROKERS)
        yield cluster
        cluster.stop()
        return
    broker = EmbeddedKafka()
    broker.start()
    asyncio.run(broker.wait_ready())
    yield broker
    broker.stop()


@pytest.fixture
def three_brokers() -> Iterator[ApacheKafkaCluster]:
    """Apache Kafka with three brokers (replication 3, min.insync.replicas 2), for this test
    alone: failure scenarios kill and restart its nodes."""
    cluster = apache_kafka(3)
    yield cluster
    cluster.stop()


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
async def ledger(database_url: str) -> AsyncIterator[Transactions]:
    engine = create_engine(database_url)
    transactions = transactions_for(engine)
    try:
        yield transactions
    finally:
        await transactions.close()
        await engine.dispose()


@pytest.fixture
async def simulator() -> AsyncIterator[SimulatorServer]:
    async with SimulatorServer(SimulatorConfig(seed=7)) as server:
        yield server


@pytest.fixture
def make_settings(request: pytest.FixtureRequest, prefix: str) -> Callable[..., Settings]:
    """Settings for this test: its own topics, fast commits, short grace periods; on Apache
    Kafka with the idempotent producer, as production runs. The session's broker unless the
    test names a cluster (``make_settings(cluster=three_brokers)``)."""
    # the session's broker is started here, not inside a test's event loop
    session = None if "three_brokers" in request.fixturenames else request.getfixturevalue("kafka")

    def build(
        cluster: EmbeddedKafka | ApacheKafkaCluster | None = None, **overrides: Any
    ) -> Settings:
        kafka = cluster or session
        assert kafka is not None, "a test on three_brokers passes make_settings(cluster=...)"
        apache = isinstance(kafka, ApacheKafkaCluster)
        values: dict[str, Any] = {
            "kafka_bootstrap": kafka.bootstrap,
            "enable_idempotence": apache,
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
