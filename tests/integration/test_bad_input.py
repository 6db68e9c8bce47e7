"""Bad input never crashes a worker, never blocks its partition, never loses the valid jobs
around it: unreadable bytes go to the DLQ; invalid jobs go to the DLQ and get a `rejected`
result naming the field; unknown routes and tenants are rejected."""

from __future__ import annotations

import json
from collections.abc import Callable

from aiokafka import AIOKafkaProducer

from broker.config import development_config, parse_config
from broker.settings import Settings
from broker.topics import HEADER_ERROR, HEADER_SOURCE_OFFSET, HEADER_SOURCE_TOPIC
from tests.helpers import chat_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer

BAD_BYTES = [
    b"\xff\xfe\x00garbage",
    b'{"job_id": "trunc", "tenant": "demo", "kind": "ch',
    b"[1, 2, 3]",
    b'{"job_id": "nan", "tenant": "demo", "max_cost_usd": NaN}',
    b"[" * 50_000 + b"]" * 50_000,
]
INVALID = {
    "bad-kind": {"kind": "image"},
    "bad-role": {"messages": [{"role": "robot", "content": "x"}]},
    "bad-param": {"params": {"frequency_penalty": 3}},
    "extra-field": {"colour": "red"},
}


async def test_bad_messages_are_dead_lettered_and_rejected_while_valid_jobs_succeed(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url, job_partitions=1)
    config = development_config(simulator.base_url)
    topic = settings.topics.jobs(__import__("schemas").Priority.NORMAL)
    valid = [chat_job(f"ok-{i}") for i in range(10)]
    async with running_worker(settings, config):
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, max_request_size=4_000_000
        )
        await producer.start()
        try:
            for i, job in enumerate(valid):
                await producer.send(topic, json.dumps(job).encode(), key=job["job_id"].encode())
                if i < len(BAD_BYTES):
                    await producer.send(topic, BAD_BYTES[i], key=f"garbage-{i}".encode())
            for job_id, change in INVALID.items():
                await producer.send(
                    topic, json.dumps(chat_job(job_id, **change)).encode(), key=job_id.encode()
                )
            await producer.send(topic, json.dumps(chat_job("lost-route", route="nope")).encode())
            await producer.flush()
        finally:
            await producer.stop()
        results = await read_topic(
            settings.kafka_bootstrap or "",
            settings.topics.results,
            until_keys=len(valid) + len(INVALID) + 1,
        )
        dlq = await read_topic(
            settings.kafka_bootstrap or "",
            settings.topics.dlq,
            until_keys=len(BAD_BYTES) + len(INVALID),
            decode=False,
        )

    assert all(results.by_key[j["job_id"]][0]["status"] == "succeeded" for j in valid)
    for job_id, change in INVALID.items():
        result = results.by_key[job_id][0]
        assert result["status"] == "rejected"
        assert result["error"]["code"] == "invalid_request"
        field = next(iter(change))
        assert field in result["error"]["message"], result["error"]["message"]
        assert result["output"] is None
    unknown = results.by_key["lost-route"][0]
    assert unknown["status"] == "rejected" and unknown["error"]["code"] == "unknown_route"

    assert dlq.distinct() == len(BAD_BYTES) + len(INVALID)
    sent = set(BAD_BYTES)
    for record in dlq.records:
        headers = dict(record.headers)
        assert headers[HEADER_SOURCE_TOPIC].decode() == topic
        assert int(headers[HEADER_SOURCE_OFFSET]) >= 0
        assert headers[HEADER_ERROR]
        if record.key.decode().startswith("garbage-"):
            assert record.value in sent  # the original bytes, unchanged


async def test_unknown_tenants_are_forbidden_without_a_default_tenant(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url)
    config = parse_config(
        {
            "providers": {"sim": {"type": "simulator", "base_url": simulator.base_url}},
            "routes": {
                "summarize": {"kind": "chat", "deployments": [{"provider": "sim", "model": "m"}]},
                "embed": {"kind": "embedding", "deployments": [{"provider": "sim", "model": "e"}]},
            },
            "tenants": {"acme": {"allowed_routes": ["embed"]}},
        }
    )
    async with running_worker(settings, config):
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        topic = settings.topics.jobs(__import__("schemas").Priority.HIGH)
        await producer.send(
            topic, json.dumps(chat_job("stranger", tenant="mallory")).encode(), key=b"stranger"
        )
        await producer.send(
            topic, json.dumps(chat_job("not-allowed", tenant="acme")).encode(), key=b"not-allowed"
        )
        await producer.send(
            topic,
            json.dumps(chat_job("wrong-kind", tenant="acme", route="embed")).encode(),
            key=b"wrong-kind",
        )
        await producer.stop()
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=3
        )
    codes = {key: copies[0]["error"]["code"] for key, copies in results.by_key.items()}
    assert codes == {
        "stranger": "forbidden",
        "not-allowed": "forbidden",
        "wrong-kind": "invalid_request",
    }
    assert simulator.stats.calls == 0
