"""After a batch, `/metrics` on the worker's HTTP port shows what happened: jobs by status,
route and tenant, tokens and cost equal to the usage events, one latency observation per
provider call, nothing in flight, circuits closed, ready. Real broker, HTTP and database."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from broker.client import HeadwayClient
from broker.config import development_config
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
