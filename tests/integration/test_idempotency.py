"""A job that already finished is never sent to a provider again: its stored result is
re-published unchanged. Duplicate submissions yield one provider call and one result."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from broker.client import HeadwayClient
from broker.config import development_config
from broker.errors import LedgerUnavailable
from broker.settings import Settings
from tests.helpers import chat_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer
from workers.ledger.records import Claim, ClaimOutcome


async def test_a_resubmitted_finished_job_republishes_its_stored_result(
    make_settings: Callable[..., Settings], database_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=database_url)
    config = development_config(simulator.base_url)
    async with running_worker(settings, config), HeadwayClient(settings) as client:
        await client.submit(chat_job("once"))
        first = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=1
        )
        await client.submit(chat_job("once"))
        for _ in range(100):
            again = await read_topic(
                settings.kafka_bootstrap or "", settings.topics.results, until_keys=1, timeout_s=1
            )
            if len(again.by_key["once"]) == 2:
                break
        usage = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.usage, until_keys=1
        )
    copies = again.by_key["once"]
    assert len(copies) == 2
    assert copies[0] == copies[1] == first.by_key["once"][0]
    assert simulator.stats.jobs["once"] == 1
    # the usage event is re-emitted with the same event_id: consumers drop the duplicate
    assert len({e["event_id"] for e in usage.by_key["demo"]}) == 1


async def test_duplicate_submissions_in_flight_together_call_the_provider_once(
    make_settings: Callable[..., Settings], database_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=database_url)
    config = development_config(simulator.base_url)
    slow = {"messages": [{"role": "user", "content": "sim:latency_ms=300 twice"}]}
    async with running_worker(settings, config), HeadwayClient(settings) as client:
        await client.submit_many([chat_job("twice", **slow) for _ in range(3)])
        for _ in range(100):
            results = await read_topic(
                settings.kafka_bootstrap or "", settings.topics.results, until_keys=1, timeout_s=1
            )
            if len(results.by_key["twice"]) == 3:
                break
            await asyncio.sleep(0.1)
    copies = results.by_key["twice"]
    assert len(copies) == 3 and all(c == copies[0] for c in copies)
    assert simulator.stats.jobs["twice"] == 1


async def test_a_job_past_its_deadline_expires_without_a_provider_call(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url)
    config = development_config(simulator.base_url)
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    soon = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
    slow = {"messages": [{"role": "user", "content": "sim:latency_ms=5000 slow"}]}
    async with running_worker(settings, config), HeadwayClient(settings) as client:
        await client.submit(chat_job("late", deadline=past))
        await client.submit(chat_job("too-slow", deadline=soon, **slow))
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=2
        )
    for key in ("late", "too-slow"):
        result = results.by_key[key][0]
        assert result["status"] == "expired"
        assert result["error"]["code"] == "deadline_exceeded"
    assert simulator.stats.jobs["late"] == 0


async def test_a_claim_whose_answer_was_lost_does_not_leave_the_job_waiting_on_its_own_lease(
    make_settings: Callable[..., Settings], database_url: str, simulator: SimulatorServer
) -> None:
    """The database committed the claims but the connection broke before it said so (seen
    when PostgreSQL went away mid-transaction): the worker's retry finds rows held by its own
    lease, which it keeps renewing, and must take them over rather than wait for ever."""
    settings = make_settings(database_url=database_url, lease_s=30.0)
    config = development_config(simulator.base_url)
    async with running_worker(settings, config) as worker, HeadwayClient(settings) as client:
        real_claim, lost = worker.ledger.claim, 0

        async def claim_then_lose_the_answer(claim: Claim) -> ClaimOutcome:
            nonlocal lost
            outcome = await real_claim(claim)
            if lost < 5:
                lost += 1
                raise LedgerUnavailable("connection was closed in the middle of operation")
            return outcome

        worker.ledger.claim = claim_then_lose_the_answer  # type: ignore[method-assign]
        await client.submit_many([chat_job(f"lost-{i}") for i in range(10)])
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=10, timeout_s=20
        )
    assert lost == 5
    assert results.distinct() == 10
    assert all(r[0]["status"] == "succeeded" for r in results.by_key.values())
    assert all(simulator.stats.jobs[f"lost-{i}"] == 1 for i in range(10))
