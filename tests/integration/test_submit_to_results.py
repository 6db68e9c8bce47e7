"""A job submitted with the SDK comes back as exactly one result, with usage and cost,
over the real embedded broker, real HTTP to the simulator, and a real ledger."""

from __future__ import annotations

from collections.abc import Callable

from broker.client import HeadwayClient
from broker.config import development_config
from broker.settings import Settings
from tests.helpers import chat_job, embedding_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer
from workers.ledger.database.engine import create_engine
from workers.ledger.queries import batch_status, tenant_spend_usd

JOBS = 40


async def test_chat_and_embedding_jobs_each_end_with_one_succeeded_result(
    make_settings: Callable[..., Settings], database_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=database_url)
    config = development_config(simulator.base_url)
    jobs = [chat_job(f"chat-{i}", batch_id="b1") for i in range(JOBS)]
    jobs += [embedding_job(f"emb-{i}", batch_id="b1") for i in range(JOBS)]
    async with running_worker(settings, config), HeadwayClient(settings) as client:
        await client.submit_many(jobs)
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=2 * JOBS
        )
        usage = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.usage, until_keys=1
        )

    assert results.distinct() == 2 * JOBS
    for key, copies in results.by_key.items():
        assert len({c["completed_at"] for c in copies}) == 1, key
        result = copies[0]
        assert result["status"] == "succeeded", result
        assert result["tenant"] == "demo" and result["batch_id"] == "b1"
        assert result["provider"] == "simulator" and result["attempts"] == 1
        assert result["usage"]["input_tokens"] > 0
        assert result["cost_usd"] > 0
        if key.startswith("chat-"):
            assert result["output"]["text"].startswith("Summary[")
            assert result["deployment"] == "sim-chat-mini"
        else:
            embeddings = result["output"]["embeddings"]
            assert len(embeddings) == 2 and len(embeddings[0]) == 16
    assert simulator.stats.chat_calls == JOBS
    # the embed route micro-batches (max_batch_inputs = 256): a few requests, every input once
    assert simulator.stats.embedding_inputs == 2 * JOBS
    assert simulator.stats.embedding_calls < JOBS / 4

    # usage events: one per job per provider call, keyed by tenant, summing to the ledger's spend
    events = {e["event_id"]: e for e in usage.by_key["demo"]}
    engine = create_engine(database_url)
    try:
        spend = await tenant_spend_usd(engine, "demo")
        status = await batch_status(engine, "b1")
    finally:
        await engine.dispose()
    assert status.by_status == {"succeeded": 2 * JOBS}
    assert len(events) == 2 * JOBS
    assert round(sum(e["cost_usd"] for e in events.values()), 9) == round(spend, 9)
    assert round(status.cost_usd, 9) == round(spend, 9)
