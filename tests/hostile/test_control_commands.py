"""Control commands are read from a topic any Kafka client with write access can write: a
``set_budget`` dated year 9999 outranked every later operator set ("the later ``at`` wins"),
signed or not. A command's ``at`` may be at most a small clock slack past the moment it is
read (and past its record's timestamp): one dated beyond is skipped with a log line and a
metric, never clamped (a clamped date would outrank what operators set before each re-read).
A tenant with ``require_signed_control`` (or the older ``require_signed_cancels``, which means
the same) applies only control commands — cancels and budget sets — signed with its key."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import ConsumerRecord
from typer.testing import CliRunner

from broker.client import HeadwayClient, sign
from broker.config import HeadwayConfig, TenantConfig, development_config
from broker.settings import Settings
from broker.topics import HEADER_SIGNATURE
from schemas.control import ControlCommand
from tests.helpers import chat_job, point_cli_at, read_topic, running_worker
from tests.integration.test_quotas import Clock
from workers.admission.batch_caps import BatchCaps
from workers.cli.main import app
from workers.devstack.simulator import SimulatorServer
from workers.ledger import queries
from workers.ledger.database.engine import create_engine
from workers.ledger.database.transactions import Transactions
from workers.pipeline.access import AccessControl
from workers.pipeline.cancellations import Cancellations
from workers.runtime.wiring import cancel_authenticator
from workers.telemetry.metrics import Metrics

T = 1_800_000_000.0
FAR = datetime(9999, 1, 1, tzinfo=UTC)
SECRET_ENV = "HEADWAY_TEST_CONTROL_SECRET"


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T, UTC) + timedelta(seconds=seconds)


def budget(usd: float, when: datetime, tenant: str = "acme") -> ControlCommand:
    return ControlCommand(action="set_budget", tenant=tenant, batch_id="b", budget_usd=usd, at=when)


def record(
    command: ControlCommand, timestamp_ms: int = -1, secret: str | None = None
) -> ConsumerRecord[bytes, bytes]:
    value = command.model_dump_json(exclude_none=True).encode()
    headers = [] if secret is None else [(HEADER_SIGNATURE, sign(value, secret).encode())]
    return ConsumerRecord(
        topic="headway.control", partition=0, offset=0, timestamp=timestamp_ms,
        timestamp_type=0, key=command.tenant.encode(), value=value, checksum=None,
        serialized_key_size=len(command.tenant), serialized_value_size=len(value),
        headers=tuple(headers),
    )  # fmt: skip


async def cap_of(database_url: str, tenant: str = "acme") -> float | None:
    engine = create_engine(database_url)
    try:
        caps = (await queries.batch_status(engine, "b", tenant)).caps
    finally:
        await engine.dispose()
    return caps[0].budget_usd if caps else None


async def test_a_set_budget_dated_far_ahead_does_not_outrank_later_operator_sets(
    ledger: Transactions, database_url: str
) -> None:
    clock = Clock(T)
    follower = Cancellations(ledger.run, clock, caps=BatchCaps(ledger.run, clock))
    await follower._apply(record(budget(100.0, FAR)))  # year 9999: skipped
    await follower._apply(record(budget(100.0, at(3600))))  # an hour ahead: skipped
    await follower._apply(record(budget(0.0, at(-10))))  # the operator's: applied
    assert await cap_of(database_url) == 0.0
    clock.now += 20
    await follower._apply(record(budget(2.0, at(10 + 59))))  # within the slack
    assert await cap_of(database_url) == 2.0
    clock.now += 7200  # read again two hours on (a restarted worker, the topic from its start)
    ahead = record(budget(100.0, at(3600)), timestamp_ms=int(T * 1000))
    await follower._apply(ahead)  # dated an hour past its record's timestamp: still skipped
    assert await cap_of(database_url) == 2.0


async def test_a_skipped_command_is_logged_and_counted(
    ledger: Transactions, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(T)
    skipped: list[str] = []
    follower = Cancellations(
        ledger.run, clock, caps=BatchCaps(ledger.run, clock), skipped=skipped.append
    )
    with caplog.at_level(logging.WARNING, logger="workers.pipeline.cancellations"):
        await follower._apply(record(budget(100.0, FAR)))
    assert skipped == ["future_at"]
    assert "dated 9999-01-01" in caplog.text and "ahead of" in caplog.text


def signing_config(**tenant: bool) -> HeadwayConfig:
    acme = TenantConfig(signing_secret_env=SECRET_ENV, **tenant)
    return HeadwayConfig(tenants={"acme": acme, "demo": TenantConfig()})


@pytest.mark.parametrize("key", ["require_signed_control", "require_signed_cancels"])
async def test_a_tenant_requiring_signed_control_applies_only_signed_budget_sets(
    ledger: Transactions, database_url: str, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setenv(SECRET_ENV, "acme-secret")
    config = signing_config(**{key: True})
    clock = Clock(T)
    follower = Cancellations(
        ledger.run,
        clock,
        cancel_authenticator(config, AccessControl(config)),
        BatchCaps(ledger.run, clock),
    )
    await follower._apply(record(budget(5.0, at(-30))))  # unsigned: skipped
    assert await cap_of(database_url) is None
    await follower._apply(record(budget(5.0, at(-20)), secret="wrong"))  # forged: skipped
    assert await cap_of(database_url) is None
    await follower._apply(record(budget(1.0, at(-10)), secret="acme-secret"))
    assert await cap_of(database_url) == 1.0
    await follower._apply(record(budget(3.0, at(-5), tenant="demo")))  # demo does not ask
    assert await cap_of(database_url, "demo") == 3.0


def test_require_signed_control_needs_a_signing_secret() -> None:
    with pytest.raises(ValueError, match="require_signed_control: needs signing_secret_env"):
        HeadwayConfig(tenants={"acme": TenantConfig(require_signed_control=True)})
    assert TenantConfig(require_signed_cancels=True, signing_secret_env="X").signed_control


async def test_a_far_future_set_on_the_topic_loses_to_the_operators_later_set(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(database_url=sqlite_url)
    point_cli_at(settings, monkeypatch)
    bootstrap = settings.kafka_bootstrap or ""
    config = development_config(simulator.base_url)
    async with running_worker(settings, config), HeadwayClient(settings) as anyone:
        await anyone.control(budget(100.0, FAR, tenant="demo"))
        told = await asyncio.to_thread(
            CliRunner().invoke,
            app,
            ["budget", "set", "--tenant", "demo", "--batch", "b", "--usd", "0"],
        )
        assert told.exit_code == 0, told.output
        for _ in range(200):
            if await cap_of(sqlite_url, "demo") == 0.0:
                break
            await asyncio.sleep(0.05)
        assert await cap_of(sqlite_url, "demo") == 0.0
        await anyone.submit(chat_job("after", batch_id="b"))
        found = await read_topic(bootstrap, settings.topics.results, until_keys=1)
    [result] = found.by_key["after"]
    assert (result["status"], result["error"]["code"]) == ("rejected", "budget_exceeded")
    assert simulator.stats.calls == 0


def test_control_skips_are_counted_by_reason() -> None:
    metrics = Metrics()
    metrics.control_skipped("future_at")
    metrics.control_skipped("future_at")
    text = metrics.render().decode()
    assert 'headway_control_skipped_total{reason="future_at"} 2.0' in text
