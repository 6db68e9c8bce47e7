"""Embedding micro-batching over the real broker, real HTTP and a real ledger: many jobs share
a request, each gets its own embeddings and its share of the tokens, one bad input fails alone."""

from __future__ import annotations

import math
from collections.abc import Callable

import httpx
import pytest

from broker.client import HeadwayClient
from broker.config import HeadwayConfig, parse_config
from broker.settings import Settings
from tests.helpers import embedding_job, read_topic, running_worker
from workers.calls.microbatch import split_tokens
from workers.devstack.simulator import SimulatorServer
from workers.devstack.simulator.behaviour import embedding

pytestmark = pytest.mark.integration


def batched(url: str, max_batch_inputs: int) -> HeadwayConfig:
    return parse_config(
        {
            "providers": {"sim": {"type": "simulator", "base_url": url}},
            "routes": {
                "embed": {
                    "kind": "embedding",
                    "deployments": [
                        {
                            "provider": "sim",
                            "model": "emb",
                            "input_usd_per_mtok": 0.02,
                            "max_batch_inputs": max_batch_inputs,
                        }
                    ],
                }
            },
            "tenants": {"demo": {}},
        }
    )


async def test_single_text_jobs_share_requests_and_each_gets_its_own_embedding(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    jobs = 300
    settings = make_settings(database_url=sqlite_url, concurrency=128)
    config = batched(simulator.base_url, 64)
    texts = {f"e-{i}": f"document number {i} " * (1 + i % 5) for i in range(jobs)}
    async with running_worker(settings, config), HeadwayClient(settings) as client:
        await client.submit_many(embedding_job(k, input=t) for k, t in texts.items())
        bootstrap = settings.kafka_bootstrap or ""
        results = await read_topic(bootstrap, settings.topics.results, until_keys=jobs)
        usage = await read_topic(bootstrap, settings.topics.usage, until_keys=1)

    assert simulator.stats.embedding_inputs == jobs
    assert simulator.stats.embedding_calls <= math.ceil(1.1 * jobs / 64) + 3  # + linger flushes
    for key, copies in results.by_key.items():
        result = copies[0]
        assert result["status"] == "succeeded", result
        assert result["output"]["embeddings"] == [embedding(texts[key], 16)], key
        assert result["usage"]["input_tokens"] > 0 and result["attempts"] == 1
    # every job's share of the tokens adds up to what the provider reported for all of them
    events = usage.by_key["demo"]
    assert len(events) == jobs
    reported = sum(max(1, math.ceil(len(t) / 4)) for t in texts.values())
    assert sum(e["input_tokens"] for e in events) == reported


async def test_one_bad_input_fails_only_its_own_job(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url, concurrency=64)
    config = batched(simulator.base_url, 32)
    jobs = [embedding_job(f"g-{i}", input=f"good text {i}") for i in range(23)]
    jobs.insert(11, embedding_job("bad", input="this one sim:reject please"))
    async with running_worker(settings, config), HeadwayClient(settings) as client:
        await client.submit_many(jobs)
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=24
        )
    statuses = {key: copies[0] for key, copies in results.by_key.items()}
    bad = statuses.pop("bad")
    assert bad["status"] == "failed"
    assert bad["error"]["code"] == "provider_error" and "rejected input" in bad["error"]["message"]
    assert {r["status"] for r in statuses.values()} == {"succeeded"}


async def test_the_simulator_embeds_what_a_direct_call_embeds(simulator: SimulatorServer) -> None:
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            f"{simulator.base_url}/embeddings", json={"model": "emb", "input": ["abc"]}
        )
    assert reply.json()["data"][0]["embedding"] == embedding("abc", 16)


def test_token_shares_add_up_exactly_and_follow_the_weights() -> None:
    assert split_tokens(10, [1, 1, 1]) == [4, 3, 3]
    assert sum(split_tokens(1001, [5, 17, 3, 40])) == 1001
    assert split_tokens(100, [1, 3]) == [25, 75]
    assert split_tokens(7, [0, 0]) in ([4, 3], [3, 4])
