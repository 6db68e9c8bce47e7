"""Alert webhooks against hostile or broken receivers, over real HTTP (a loopback receiver) and
a real ledger (SQLite and PostgreSQL): a slow receiver holds up its own tenant only; an alert is
POSTed once by the worker whose round outlasts its lease (renewed), and a round that cannot
renew stops before another worker may start; a URL to a private, loopback or link-local
address is refused — literal ones when the worker loads its config, names after resolving
them, before any connection — unless the operator allows it; the connection goes to the address
that was checked; no redirect is followed; the Standard Webhooks signature verifies with the
``standardwebhooks`` package and a replayed request's age gives it away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from broker.config import HeadwayConfig, parse_config
from broker.errors import ConfigError
from broker.settings import Settings, WebhookSettings
from tests.hostile.receivers import Behaviour, Receiver
from workers.admission.budget_alerts import alert, insert_alerts
from workers.admission.webhooks.deliveries import AlertDeliveries
from workers.admission.webhooks.posting import (
    SIGNATURE_HEADER,
    Outcome,
    Target,
    Webhooks,
    signature,
    targets,
)
from workers.admission.webhooks.transport import webhook_client
from workers.ledger.database.lease_keeper import Tenure
from workers.ledger.database.models import BudgetAlertRow
from workers.ledger.database.transactions import Connection, Transactions, Work
from workers.runtime.worker import Worker

T = TypeVar("T")
SECRET = b"s3cret"
FAST = WebhookSettings(timeout_s=3.0, backoff_s=30.0)


def config(**tenants: dict[str, Any]) -> HeadwayConfig:
    return parse_config(
        {
            "providers": {"p": {"type": "openai", "base_url": "https://api.example.com"}},
            "routes": {"r": {"kind": "chat", "deployments": [{"provider": "p", "model": "m"}]}},
            "tenants": tenants,
        }
    )


async def published(ledger: Transactions, tenant: str, threshold: float = 1.0) -> str:
    """A budget alert of ``tenant``, on the alerts topic already; its event id."""
    now = time.time()
    found = alert(tenant, "total", "budget_threshold", 1.0, 1.0, datetime.now(UTC), threshold)

    async def write(conn: Connection) -> None:
        await insert_alerts(conn, [found], now + threshold)  # created in threshold order
        await conn.execute(
            update(BudgetAlertRow)
            .where(BudgetAlertRow.event_id == found.event.event_id)
            .values(published_at=now)
        )

    await ledger.run(write)
    return found.event.event_id


async def delivered(ledger: Transactions) -> set[str]:
    async def read(conn: Connection) -> set[str]:
        rows = await conn.execute(
            select(BudgetAlertRow.event_id).where(BudgetAlertRow.delivered_at.is_not(None))
        )
        return {event for (event,) in rows}

    return await ledger.run(read)


def hooks(
    receiver: Receiver,
    client: Any,
    clock: Callable[[], float] = time.time,
    timeout_s: float = FAST.timeout_s,
    **paths: str,
) -> Webhooks:
    """Tenants' webhooks on ``receiver`` (tenant=path), loopback allowed as an operator would."""
    found = {t: Target(receiver.url(p), SECRET, allow_private=True) for t, p in paths.items()}
    return Webhooks(found, client, clock, timeout_s, wait_s=0.01)


async def test_a_slow_receiver_does_not_delay_another_tenants_alert(
    ledger: Transactions,
) -> None:
    async with Receiver() as receiver, webhook_client() as client:
        receiver.behaviours["slow"] = Behaviour(delay_s=10.0)  # sleeps past every timeout
        slow_alert = await published(ledger, "slow", 0.5)  # the older alert: first in line
        quick_alert = await published(ledger, "quick", 0.8)
        webhooks = hooks(receiver, client, timeout_s=1.0, slow="slow", quick="quick")
        deliveries = AlertDeliveries(ledger.run, webhooks, "w1", time.time, FAST)

        started = time.monotonic()
        assert await deliveries.deliver_pending() is Tenure.DONE
        took = time.monotonic() - started
        [quick] = receiver.at("quick")
        assert quick.at - started < 0.8  # not after the slow one's first 1 s timeout
        assert len(receiver.at("slow")) == 3  # its own attempts, each cut at 1 s
        assert await delivered(ledger) == {quick_alert}
        assert took < 5.0  # the round waited for the slow tenant's attempts, no more

        again = await published(ledger, "quick", 1.0)
        started = time.monotonic()
        await deliveries.deliver_pending()  # the slow tenant is backing off: not tried
        assert time.monotonic() - started < 1.0
        assert len(receiver.at("slow")) == 3 and len(receiver.at("quick")) == 2
        assert await delivered(ledger) == {quick_alert, again}
        assert slow_alert not in await delivered(ledger)


async def test_one_alert_is_posted_once_across_a_lease_boundary(ledger: Transactions) -> None:
    lease = WebhookSettings(timeout_s=8.0, lease_s=2.0)
    async with Receiver() as receiver, webhook_client() as client:
        receiver.behaviours["acme"] = Behaviour(delay_s=5.0)  # 2.5 leases per POST
        event = await published(ledger, "acme")
        first = AlertDeliveries(ledger.run, hooks(receiver, client, timeout_s=8.0, acme="acme"),
                                "w1", time.time, lease)  # fmt: skip
        second = AlertDeliveries(ledger.run, hooks(receiver, client, timeout_s=8.0, acme="acme"),
                                 "w2", time.time, lease)  # fmt: skip

        round_of_first = asyncio.create_task(first.deliver_pending())
        await receiver.arrived.wait()  # the first worker's POST is at the receiver
        tries = []
        while not round_of_first.done():  # the other worker tries all along
            tries.append(await second.deliver_pending())
            await asyncio.sleep(0.05)

        assert await round_of_first is Tenure.DONE
        assert len(receiver.at("acme")) == 1  # never POSTed by the second worker too
        assert receiver.at("acme")[0].headers["webhook-id"] == event
        # refused the lease while the first delivered (its last try may follow the release)
        assert set(tries[:-1]) == {Tenure.NOT_HELD} and len(tries) > 20
        assert await delivered(ledger) == {event}


class Breakable:
    """A worker's ledger that goes away when told (its renewals fail from then on)."""

    def __init__(self, ledger: Transactions) -> None:
        self._ledger = ledger
        self.broken = False

    def __call__(self, work: Work[T]) -> Awaitable[T]:
        if self.broken:
            raise ConnectionError("the ledger is unreachable")
        return self._ledger.run(work)


async def test_a_round_that_cannot_renew_its_lease_stops_before_another_worker_may_deliver(
    ledger: Transactions,
) -> None:
    lease = WebhookSettings(timeout_s=5.0, lease_s=1.2)
    cut_off = Breakable(ledger)
    async with Receiver() as receiver, webhook_client() as client:
        receiver.behaviours["acme"] = Behaviour(delay_s=3.0)
        event = await published(ledger, "acme")
        first = AlertDeliveries(cut_off, hooks(receiver, client, timeout_s=5.0, acme="acme"),
                                "w1", time.time, lease)  # fmt: skip
        second = AlertDeliveries(ledger.run, hooks(receiver, client, timeout_s=5.0, acme="acme"),
                                 "w2", time.time, lease)  # fmt: skip

        round_of_first = asyncio.create_task(first.deliver_pending())
        await receiver.arrived.wait()
        cut_off.broken = True  # mid-POST, the first worker loses its database
        tenure = await round_of_first
        stopped = time.monotonic()
        receiver.behaviours["acme"] = Behaviour()
        for _ in range(100):  # the other worker tries until the lease is free
            if await second.deliver_pending() is not Tenure.NOT_HELD:
                break
            await asyncio.sleep(0.05)

    assert tenure is Tenure.STOPPED  # its POST cancelled before the lease could lapse
    first_post, second_post = receiver.at("acme")
    assert stopped - first_post.at < 1.2  # within the lease it held
    assert second_post.at > stopped  # the other worker began only after the first stopped
    assert first_post.headers["webhook-id"] == second_post.headers["webhook-id"] == event
    assert await delivered(ledger) == {event}  # at least once, as the same event


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://127.0.0.1:8080/hook", "127.0.0.1 is a loopback address"),
        ("https://10.1.2.3/hook", "10.1.2.3 is a private address"),
        ("https://172.16.0.1/hook", "172.16.0.1 is a private address"),
        ("https://192.168.1.1/hook", "192.168.1.1 is a private address"),
        ("http://[::1]/hook", "::1 is a loopback address"),
        ("http://[fe80::1]/hook", "fe80::1 is a link-local address"),
        ("http://[fd00::1]/hook", "fd00::1 is a private (unique-local) address"),
        ("http://0.0.0.0/hook", "0.0.0.0 is an unspecified address"),
        ("http://224.0.0.1/hook", "224.0.0.1 is a multicast address"),
        ("http://2130706433/hook", "2130706433 is 127.0.0.1: 127.0.0.1 is a loopback address"),
        ("http://[::ffff:a9fe:a9fe]/", "is a link-local address (it embeds 169.254.169.254)"),
    ],
)
def test_a_webhook_url_to_a_refused_address_is_a_config_error_naming_why(
    url: str, reason: str
) -> None:
    hostile = config(acme={"alert_webhook_url": url})

    with pytest.raises(ConfigError) as refused:
        targets(hostile, {})

    message = str(refused.value)
    assert message.startswith("tenants.acme.alert_webhook_url: ") and reason in message
    assert "alert_webhook_allow_private = true" in message  # and how to allow it


async def test_a_worker_with_a_webhook_to_a_refused_address_does_not_start(
    tmp_path: Path,
) -> None:
    settings = Settings(
        kafka_bootstrap="127.0.0.1:1",  # never reached: the config is refused first
        database_url=f"sqlite+aiosqlite:///{tmp_path}/ledger.db",
        config=tmp_path / "absent.toml",
    )
    hostile = config(acme={"alert_webhook_url": "http://169.254.169.254/latest/meta-data/"})

    with pytest.raises(ConfigError, match=r"^tenants\.acme\.alert_webhook_url: 169\.254"):
        async with Worker(settings, hostile):
            pass


def test_the_operator_may_allow_private_receivers_per_tenant_or_for_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "http://10.0.0.7/hook"
    per_tenant = config(acme={"alert_webhook_url": url, "alert_webhook_allow_private": True})
    assert targets(per_tenant, {})["acme"] == Target(url, None, allow_private=True)
    monkeypatch.setenv("HEADWAY_WEBHOOK_ALLOW_PRIVATE", "true")
    everyone = config(acme={"alert_webhook_url": url})
    assert targets(everyone, {}, Settings().webhooks.allow_private)["acme"].allow_private
    public = config(acme={"alert_webhook_url": "https://93.184.216.34/hook"})
    assert targets(public, {})["acme"].allow_private is False  # a public address needs nothing


async def test_a_name_resolving_to_a_refused_address_is_refused_before_any_connection(
    ledger: Transactions,
) -> None:
    async with Receiver() as receiver, webhook_client() as client:
        url = receiver.url("acme", host="localhost")  # a name: passes the config's check
        [(tenant, target)] = targets(config(acme={"alert_webhook_url": url}), {}).items()
        webhooks = Webhooks({tenant: target}, client, time.time, 2.0, wait_s=0.01)
        event = await published(ledger, "acme")

        refused = await webhooks.deliver("acme", event, b"{}")
        await AlertDeliveries(ledger.run, webhooks, "w1", time.time, FAST).deliver_pending()

    assert refused.outcome is Outcome.BLOCKED
    assert refused.detail.startswith("localhost resolves to ")
    assert ", a loopback address; " in refused.detail
    assert "alert_webhook_allow_private" in refused.detail
    assert receiver.received == []  # nothing ever connected
    assert await delivered(ledger) == set()  # left undelivered, its tenant backing off


async def test_a_name_with_one_refused_address_among_its_answers_is_refused() -> None:
    resolved: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["93.184.216.34", "169.254.169.254"]  # the second is the metadata service

    async with webhook_client(rebinding) as client:
        target = Target("https://hooks.example.com/h", SECRET)
        webhooks = Webhooks({"acme": target}, client, time.time, 2.0, wait_s=0.01)
        refused = await webhooks.deliver("acme", "alert-1", b"{}")

    assert refused.outcome is Outcome.BLOCKED
    assert refused.detail.startswith(
        "hooks.example.com resolves to 169.254.169.254, a link-local address; "
    )
    assert resolved == ["hooks.example.com"]  # not retried: a refusal is no transient error


async def test_the_connection_goes_to_the_address_that_was_checked() -> None:
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])  # a name rebinding after one answer
    resolved: list[str] = []

    async def once_then_elsewhere(host: str, port: int) -> list[str]:
        resolved.append(host)
        return next(answers)

    async with Receiver() as receiver, webhook_client(once_then_elsewhere) as client:
        target = Target(f"http://hooks.invalid:{receiver.port}/acme", SECRET, True)
        webhooks = Webhooks({"acme": target}, client, time.time, 2.0, wait_s=0.01)
        done = await webhooks.deliver("acme", "alert-1", b"{}")

    assert done.outcome is Outcome.DELIVERED  # .invalid never resolves: the pinned IP served
    [request] = receiver.received
    assert request.headers["Host"] == f"hooks.invalid:{receiver.port}"
    assert resolved == ["hooks.invalid"]  # resolved once, connected to that answer


async def test_a_redirect_is_not_followed() -> None:
    async with Receiver() as receiver, webhook_client() as client:
        receiver.behaviours["acme"] = Behaviour(
            statuses=iter([307]), location=receiver.url("elsewhere")
        )
        webhooks = hooks(receiver, client, acme="acme")
        answer = await webhooks.deliver("acme", "alert-1", b"{}")

    assert answer.outcome is Outcome.REFUSED and answer.detail == "HTTP 307"
    assert [r.path for r in receiver.received] == ["acme"]  # never "elsewhere"


async def test_the_signature_verifies_with_standardwebhooks_and_a_replay_is_detectable() -> None:
    body = b'{"event_id":"alert-1","kind":"budget_exhausted"}'
    async with Receiver() as receiver, webhook_client() as client:
        receiver.behaviours["acme"] = Behaviour(statuses=iter([503]))
        assert (await hooks(receiver, client, acme="acme").deliver("acme", "alert-1", body)).settled
        ten_minutes_ago = hooks(receiver, client, lambda: time.time() - 600, acme="acme")
        await ten_minutes_ago.deliver("acme", "alert-1", body)  # a request captured back then

    retried, fresh, replayed = receiver.received
    verifier = Webhook(SECRET)  # the secret's bytes, as the tenant's receiver holds them
    assert verifier.verify(fresh.body, fresh.headers) == {
        "event_id": "alert-1", "kind": "budget_exhausted"
    }  # fmt: skip
    assert fresh.headers["webhook-id"] == retried.headers["webhook-id"] == "alert-1"
    assert fresh.headers[SIGNATURE_HEADER] == signature(SECRET, body)  # the old header too
    with pytest.raises(WebhookVerificationError, match="too old"):
        verifier.verify(replayed.body, replayed.headers)
    refreshed = {**replayed.headers, "webhook-timestamp": fresh.headers["webhook-timestamp"]}
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        verifier.verify(replayed.body, refreshed)  # the timestamp is signed: no refreshing it
