"""Budget alerts exactly once, on SQLite and PostgreSQL: two workers noticing the same crossing
write one alert; one worker at a time publishes; a worker killed between publishing and marking
leaves the alert to be published again as the same event (same id); an exhausted period of a
deferring tenant is followed by a reset in the next; a tenant's webhook gets each alert once,
signed, after a retry over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from aiohttp import web
from sqlalchemy import select

from broker.config import parse_config
from broker.embedded import free_port
from broker.settings import WebhookSettings
from broker.topics import Topics
from workers.admission.budget_alerts import AlertPublisher, Spend, alert, insert_alerts
from workers.admission.periods import period_key
from workers.admission.webhooks.deliveries import AlertDeliveries
from workers.admission.webhooks.posting import SIGNATURE_HEADER, Target, Webhooks, signature
from workers.admission.webhooks.transport import webhook_client
from workers.ledger.database.models import BudgetAlertRow
from workers.ledger.database.transactions import Connection, Transactions
from workers.settle.publisher import Outgoing

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC).timestamp()
DAY = 86_400.0
CONFIG = parse_config(
    {
        "providers": {"p": {"type": "openai", "base_url": "http://127.0.0.1:9"}},
        "routes": {"r": {"kind": "chat", "deployments": [{"provider": "p", "model": "m"}]}},
        "budget_alerts": [0.5, 0.8, 1.0],
        "tenants": {
            "acme": {"budget_usd": 10.0},
            "patient": {"budget_usd": 1.0, "on_budget_exhausted": "defer"},
        },
    }
)


class Sink:
    """A publish function recording what it was given; ``fail_after`` raises after recording
    (the worker dies after the broker took the records, before it marks them)."""

    def __init__(self, fail_after: bool = False) -> None:
        self.sent: list[Outgoing] = []
        self.fail_after = fail_after

    async def __call__(self, records: Sequence[Outgoing]) -> None:
        self.sent.extend(records)
        await asyncio.sleep(0.01)
        if self.fail_after:
            raise RuntimeError("killed before marking")


def spends(at: float = T0, **spent: float) -> list[Spend]:
    """Each tenant's spend in its current period, as a budget refresh reads it."""
    when = datetime.fromtimestamp(at, UTC)
    found = []
    for name, usd in spent.items():
        tenant = CONFIG.tenants[name]
        assert tenant.budget_usd is not None
        found.append(Spend(name, period_key(tenant.budget_period, when), tenant.budget_usd, usd))
    return found


def publisher(ledger: Transactions, owner: str, sink: Sink, now: float = T0) -> AlertPublisher:
    return AlertPublisher(CONFIG, ledger.run, sink, Topics("hw"), owner, lambda: now)


async def alerts(ledger: Transactions) -> list[tuple[str, str, str, float | None]]:
    async def read(conn: Connection) -> list[tuple[str, str, str, float | None]]:
        rows = await conn.execute(
            select(
                BudgetAlertRow.kind,
                BudgetAlertRow.threshold,
                BudgetAlertRow.period,
                BudgetAlertRow.published_at,
            ).order_by(BudgetAlertRow.kind, BudgetAlertRow.threshold)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]

    return await ledger.run(read)


async def test_two_workers_noticing_the_same_crossing_write_and_publish_it_once(
    ledger: Transactions,
) -> None:
    sink = Sink()
    first, second = publisher(ledger, "w1", sink), publisher(ledger, "w2", sink)

    await asyncio.gather(first.notice(spends(acme=8.5)), second.notice(spends(acme=8.5)))
    await asyncio.gather(first.publish_pending(), second.publish_pending())
    await asyncio.gather(first.publish_pending(), second.publish_pending())

    assert [(k, t) for k, t, _, _ in await alerts(ledger)] == [
        ("budget_threshold", "0.5"), ("budget_threshold", "0.8"),
    ]  # fmt: skip
    events = [json.loads(record.value or b"") for record in sink.sent]
    assert sorted(e["threshold"] for e in events) == [0.5, 0.8]
    assert len({e["event_id"] for e in events}) == 2 and {r.key for r in sink.sent} == {b"acme"}
    assert events[0]["spent_usd"] == 8.5 and events[0]["budget_usd"] == 10.0
    assert events[0]["period"] == "day" and events[0]["scope"] == "tenant"


async def test_a_worker_killed_after_publishing_leaves_the_same_event_to_publish_again(
    ledger: Transactions,
) -> None:
    dying, healthy = Sink(fail_after=True), Sink()
    await publisher(ledger, "w1", dying).notice(spends(acme=10.0))

    with pytest.raises(RuntimeError):
        await publisher(ledger, "w1", dying).publish_pending()
    published = await publisher(ledger, "w2", healthy).publish_pending()

    assert published == 3
    first = {json.loads(r.value or b"")["event_id"] for r in dying.sent}
    again = {json.loads(r.value or b"")["event_id"] for r in healthy.sent}
    assert first == again and len(again) == 3  # the same three events, by id
    assert all(published_at is not None for *_, published_at in await alerts(ledger))


async def test_a_deferring_tenants_exhausted_period_is_followed_by_a_reset(
    ledger: Transactions,
) -> None:
    yesterday = datetime.fromtimestamp(T0 - DAY, UTC)
    exhausted = alert("patient", "day:2026-12-02", "budget_exhausted", 1.0, 1.0, yesterday)
    await ledger.run(lambda conn: insert_alerts(conn, [exhausted], T0 - DAY))

    await publisher(ledger, "w1", Sink()).notice(spends(patient=0.0, acme=0.0))

    kinds = {(kind, period) for kind, _, period, _ in await alerts(ledger)}
    assert kinds == {("budget_exhausted", "day:2026-12-02"), ("budget_reset", "day:2026-12-03")}


async def test_alerts_are_posted_signed_to_the_tenants_webhook_retried_and_delivered_once(
    ledger: Transactions,
) -> None:
    received: list[tuple[bytes, str]] = []
    answers = iter([500, 200, 200, 200])

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers.get(SIGNATURE_HEADER, "")))
        return web.Response(status=next(answers))

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        targets = {"acme": Target(f"http://127.0.0.1:{port}/hook", b"s3cret", True)}
        async with webhook_client() as client:
            webhooks = Webhooks(targets, client, lambda: T0, wait_s=0.01)
            deliveries = AlertDeliveries(ledger.run, webhooks, "w1", lambda: T0, WebhookSettings())
            sink = Sink()
            alerts_of = AlertPublisher(
                CONFIG, ledger.run, sink, Topics("hw"), "w1", lambda: T0, deliveries.wake
            )
            await alerts_of.notice(spends(acme=5.0, patient=0.6))
            await alerts_of.publish_pending()
            await deliveries.deliver_pending()
            await deliveries.deliver_pending()  # nothing left to deliver
    finally:
        await runner.cleanup()

    [event] = [json.loads(r.value or b"") for r in sink.sent if r.key == b"acme"]
    assert len(received) == 2  # a 500, then the delivery
    body, signed = received[-1]
    assert json.loads(body) == event and signed == signature(b"s3cret", body)
    assert {r.key for r in sink.sent} == {b"acme", b"patient"}  # patient: the topic only
