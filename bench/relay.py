"""The naive relay baseline: aiokafka consume → httpx POST → aiokafka produce.

No validation, no ledger, no usage events, no retries: the least a relay can do. It uses the
same httpx transport as headway so the comparison measures the pipeline, not the HTTP client.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from broker.settings import HttpSettings
from workers.providers.http import create_http_client


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, ready: asyncio.Event) -> None:
        self.ready = ready

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if assigned:
            self.ready.set()


async def relay(
    bootstrap: str,
    jobs_topic: str,
    results_topic: str,
    simulator_url: str,
    concurrency: int,
    expected: int,
    group: str,
    added: list[float] | None = None,
    linger_ms: int = 5,
    fetch_max_wait_ms: int = 500,
    ready: asyncio.Event | None = None,
) -> tuple[float, float, float]:
    """Relay ``expected`` jobs; returns perf_counter() at first fetch, first done, last done.

    ``added``: gets, per job, the time from taking its record until its result is
    acknowledged, minus the provider call (the relay's own added latency). ``ready`` is set
    once the consumer has its partitions."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
    consumer.subscribe([jobs_topic], listener=_Assigned(ready or asyncio.Event()))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=linger_ms)
    http = create_http_client(HttpSettings(concurrency * 2))
    await consumer.start()
    await producer.start()
    slots = asyncio.Semaphore(concurrency)
    done = 0
    first = last = 0.0
    finished = asyncio.Event()

    async def handle(value: bytes, key: bytes | None) -> None:
        nonlocal done, first, last
        taken = time.perf_counter()
        try:
            job = json.loads(value)
            called = time.perf_counter()
            response = await http.post(
                f"{simulator_url}/chat/completions",
                json={
                    "model": "sim-chat-mini",
                    "messages": job["messages"],
                    **job.get("params", {}),
                },
            )
            call_s = time.perf_counter() - called
            reply = response.json()
            result = {"job_id": job["job_id"], "text": reply["choices"][0]["message"]["content"]}
            await (await producer.send(results_topic, json.dumps(result).encode(), key=key))
            if added is not None:
                added.append(time.perf_counter() - taken - call_s)
        finally:
            slots.release()
        done += 1
        last = time.perf_counter()
        if done == 1:
            first = last
        if done == expected:
            finished.set()

    tasks = set()
    consumed = 0
    fetched = 0.0
    try:
        async for record in consumer:
            if not consumed:
                fetched = time.perf_counter()
            await slots.acquire()
            task = asyncio.create_task(handle(record.value, record.key))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            consumed += 1
            if consumed == expected:
                break
        await finished.wait()
    finally:
        await consumer.stop()
        await producer.stop()
        await http.aclose()
    return fetched, first, last
