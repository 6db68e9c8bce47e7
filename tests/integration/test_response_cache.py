"""The response cache over the real broker, real HTTP and a real ledger: a re-run batch of
deterministic requests makes no provider calls and costs nothing; identical requests in flight
at once share one call; entries are per tenant unless the route shares them, expire, and are
pruned; non-deterministic chat is never cached."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from broker.client import HeadwayClient
from broker.config import HeadwayConfig, parse_config
from broker.settings import Settings
from tests.helpers import chat_job, embedding_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer
from workers.ledger import cache_rows as rows
from workers.ledger.cache_rows import CacheEntry
from workers.ledger.database.engine import create_engine
from workers.ledger.queries import tenant_spend_usd


def cached_config(url: str, **cache: Any) -> HeadwayConfig:
    deployment = {"provider": "sim", "input_usd_per_mtok": 0.5, "output_usd_per_mtok": 1.5}
    return parse_config(
        {
            "providers": {"sim": {"type": "simulator", "base_url": url}},
            "routes": {
                "embed": {
                    "kind": "embedding",
                    "deployments": [{**deployment, "model": "emb", "max_batch_inputs": 64}],
                    "cache": cache,
                },
                "summarize": {
                    "kind": "chat",
                    "deployments": [{**deployment, "model": "chat"}],
                    "cache": cache,
                },
            },
            "tenants": {"demo": {}, "acme": {}},
        }
    )


SUBMITTED: dict[str, set[str]] = {}  # job ids submitted so far, per results topic


async def run_batch(
    settings: Settings, jobs: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Submit ``jobs``; their results once all are in, and every usage event so far."""
    async with HeadwayClient(settings) as client:
        await client.submit_many(jobs)
    topic = settings.topics.results
    seen = SUBMITTED.setdefault(topic, set())
    seen.update(job["job_id"] for job in jobs)
    bootstrap = settings.kafka_bootstrap or ""
    results = await read_topic(bootstrap, topic, until_keys=len(seen))
    wanted = {job["job_id"] for job in jobs}
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # usage events land with their results, or just after
        usage = await read_topic(bootstrap, settings.topics.usage, until_keys=1)
        events = [event for copies in usage.by_key.values() for event in copies]
        if wanted <= {event["job_id"] for event in events}:
            break
        await asyncio.sleep(0.2)
    return {k: c[0] for k, c in results.by_key.items() if k in wanted}, events


async def test_a_rerun_embedding_batch_makes_no_provider_calls_and_costs_nothing(
    make_settings: Callable[..., Settings], database_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=database_url, concurrency=128)
    first = [embedding_job(f"a-{i}", batch_id="first", input=f"text {i}") for i in range(1000)]
    again = [embedding_job(f"b-{i}", batch_id="again", input=f"text {i}") for i in range(1000)]
    async with running_worker(settings, cached_config(simulator.base_url)):
        done, _ = await run_batch(settings, first)
        calls_before = simulator.stats.embedding_calls
        redone, events = await run_batch(settings, first + again)
    assert all(r["status"] == "succeeded" and not r["cached"] for r in done.values())
    assert simulator.stats.embedding_calls == calls_before  # not one more call
    for i in range(1000):
        hit, original = redone[f"b-{i}"], done[f"a-{i}"]
        assert hit["status"] == "succeeded" and hit["cached"] is True, hit
        assert hit["cost_usd"] == 0 and hit["attempts"] == 0
        assert hit["output"] == original["output"]
        assert hit["usage"]["input_tokens"] == original["usage"]["input_tokens"]
    again_events = {e["event_id"]: e for e in events if e["batch_id"] == "again"}
    assert len(again_events) == 1000
    assert all(e["cached"] and e["cost_usd"] == 0 for e in again_events.values())
    engine = create_engine(database_url)
    try:
        spend = await tenant_spend_usd(engine, "demo")
    finally:
        await engine.dispose()
    assert abs(spend - sum(r["cost_usd"] for r in done.values())) < 1e-9


async def test_identical_requests_in_flight_share_one_call(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    simulator.config.latency_ms = 400
    settings = make_settings(database_url=sqlite_url)
    same = {"messages": [{"role": "user", "content": "the same question"}]}
    jobs = [chat_job(f"q-{i}", params={"temperature": 0}, **same) for i in range(20)]
    async with running_worker(settings, cached_config(simulator.base_url)):
        results, _ = await run_batch(settings, jobs)
    assert simulator.stats.chat_calls == 1
    assert all(r["status"] == "succeeded" for r in results.values())
    assert len({r["output"]["text"] for r in results.values()}) == 1
    paid = [r for r in results.values() if not r["cached"]]
    assert len(paid) == 1 and paid[0]["cost_usd"] > 0
    assert all(r["cost_usd"] == 0 for r in results.values() if r["cached"])


async def test_chat_without_temperature_zero_or_a_seed_is_never_cached(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url)
    same = {"messages": [{"role": "user", "content": "creative, please"}]}
    seeded = {"messages": [{"role": "user", "content": "seeded"}], "params": {"seed": 7}}
    jobs = [chat_job(f"free-{i}", **same) for i in range(3)]
    async with running_worker(settings, cached_config(simulator.base_url)):
        await run_batch(settings, jobs)
        await run_batch(settings, [chat_job("s-1", **seeded)])
        again, _ = await run_batch(settings, [chat_job("s-2", **seeded)])
    assert simulator.stats.chat_calls == 3 + 1
    assert again["s-2"]["cached"] is True


async def test_entries_are_per_tenant_unless_shared_and_expire(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url)
    text = {"input": "a shared sentence"}
    async with running_worker(settings, cached_config(simulator.base_url, ttl_s=1.5)):
        await run_batch(settings, [embedding_job("t-1", **text)])
        results, _ = await run_batch(settings, [embedding_job("t-2", tenant="acme", **text)])
        assert results["t-2"]["cached"] is False  # acme does not see demo's entry
        calls = simulator.stats.embedding_calls
        await asyncio.sleep(2.0)
        results, _ = await run_batch(settings, [embedding_job("t-3", **text)])
        assert results["t-3"]["cached"] is False  # demo's entry expired
        assert simulator.stats.embedding_calls == calls + 1
    shared = make_settings(database_url=sqlite_url, topic_prefix=settings.topic_prefix + "-g")
    async with running_worker(shared, cached_config(simulator.base_url, scope="global")):
        await run_batch(shared, [embedding_job("g-1", **text)])
        results, _ = await run_batch(shared, [embedding_job("g-2", tenant="acme", **text)])
    assert results["g-2"]["cached"] is True


async def test_pruning_drops_expired_entries_then_the_oldest_beyond_the_bound(
    sqlite_url: str,
) -> None:
    now = time.time()

    def entry(index: int, expires_in: float) -> CacheEntry:
        return CacheEntry(
            "demo", f"k{index}", "sim", "emb", "{}", 1, 0, now + index, now + expires_in
        )

    engine = create_engine(sqlite_url)
    try:
        async with engine.begin() as conn:
            await rows.store(conn, [entry(i, -1 if i < 3 else 3600) for i in range(10)])
        async with engine.begin() as conn:
            dropped = await rows.prune(conn, now, max_entries=5)
        async with engine.begin() as conn:
            left = await rows.lookup(conn, [("demo", f"k{i}") for i in range(10)], now)
    finally:
        await engine.dispose()
    assert dropped == 5
    assert sorted(e.key for e in left) == ["k5", "k6", "k7", "k8", "k9"]
