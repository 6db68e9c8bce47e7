"""After a batch, `/metrics` on the worker's HTTP port shows what happened: jobs by status,
route and tenant, tokens and cost equal to the usage events, one latency observation per
provider call, nothing in flight, circuits closed, ready. Real broker, HTTP and database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from broker.client import HeadwayClient
from broker.config import TenantConfig, development_config
from broker.settings import Settings
from tests.helpers import chat_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer

JOBS = 20


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_after_a_batch_count_jobs_tokens_cost_and_calls(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url, http_port=0)
    jobs = [chat_job(f"m-{i}") for i in range(JOBS)] + [chat_job("lost", route="nope")]
    async with running_worker(settings, development_config(simulator.base_url)) as worker:
        async with HeadwayClient(settings) as client:
            await client.submit_many(jobs)
        await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=JOBS + 1
        )
        usage = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.usage, until_keys=1, timeout_s=10
        )
        assert worker.probes is not None
        url = f"http://127.0.0.1:{worker.probes.port}/metrics"
        async with httpx.AsyncClient() as http:
            response = await http.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    ok = {"route": "summarize", "tenant": "demo"}
    assert value(found, "headway_jobs_total", status="succeeded", **ok) == JOBS
    assert (
        value(found, "headway_jobs_total", status="rejected", route="unknown", tenant="demo") == 1
    )  # an unlisted route: one label
    events = usage.by_key["demo"]
    assert len(events) == JOBS
    tokens_in = value(found, "headway_tokens_total", direction="input", **ok)
    tokens_out = value(found, "headway_tokens_total", direction="output", **ok)
    assert tokens_in == sum(e["input_tokens"] for e in events) > 0
    assert tokens_out == sum(e["output_tokens"] for e in events) > 0
    cost = value(found, "headway_cost_usd_total", **ok)
    assert abs(cost - sum(e["cost_usd"] for e in events)) < 1e-9
    calls = sum(
        v
        for (name, labels), v in found.items()
        if name == "headway_provider_latency_seconds_count" and ("outcome", "ok") in labels
    )
    assert calls == simulator.stats.chat_calls == JOBS
    waits = sum(v for (name, _), v in found.items() if name == "headway_queue_wait_seconds_count")
    assert waits == JOBS + 1
    assert value(found, "headway_in_flight") == 0
    assert value(found, "headway_ready") == 1
    circuits = {
        dict(labels)["deployment"]: v
        for (name, labels), v in found.items()
        if name == "headway_circuit_state"
    }
    assert circuits and set(circuits.values()) == {0}
    assert value(found, "headway_consumer_lag", lane="normal") == 0


async def test_budget_gauges_show_each_budgeted_tenants_spend_and_what_is_left(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url, http_port=0, budget_gauges_s=0.2)
    config = development_config(simulator.base_url).model_copy(
        update={"tenants": {"demo": TenantConfig(budget_usd=1.0), "free": TenantConfig()}}
    )
    async with running_worker(settings, config) as worker:
        async with HeadwayClient(settings) as client:
            await client.submit_many([chat_job(f"b-{i}") for i in range(5)])
        await read_topic(settings.kafka_bootstrap or "", settings.topics.results, until_keys=5)
        usage = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.usage, until_keys=1, timeout_s=30
        )
        await asyncio.sleep(0.6)  # a refresh after the last finish
        assert worker.probes is not None
        url = f"http://127.0.0.1:{worker.probes.port}/metrics"
        async with httpx.AsyncClient() as http:
            found = samples((await http.get(url)).text)
    spent = sum(event["cost_usd"] for event in usage.by_key["demo"])
    assert len(usage.by_key["demo"]) == 5 and spent > 0
    assert abs(value(found, "headway_budget_spent_usd", tenant="demo") - spent) < 1e-9
    assert abs(value(found, "headway_budget_remaining_usd", tenant="demo") - (1.0 - spent)) < 1e-9
    assert ("headway_budget_spent_usd", frozenset({("tenant", "free")})) not in found
