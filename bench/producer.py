"""Producer: ``HeadwayClient.submit_many`` vs raw aiokafka producing the same bytes.

headway's side takes job dicts and validates, encodes, keys and routes each to its lane; the
raw side gets the bytes headway would produce, already encoded, and sends them with the same
producer options to the same topic — once with ``AIOKafkaProducer.send`` per record (what a
script does), once appended to per-partition batches as headway does (``broker/record_batches.py``,
the ceiling: the same producer with no validation or encoding). Both wait until the broker has
every record.

    python -m bench.producer [JOBS]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.common import Rates, Stack, chat_jobs, side_by_side
from broker.admin import create_topics
from broker.client import HeadwayClient, encode_job
from broker.kafka import producer_options
from broker.record_batches import RecordBatchSender
from schemas.jobs import Priority


async def headway_rate(stack: Stack, jobs: list[dict[str, Any]]) -> float:
    settings = stack.settings()
    await create_topics(settings, stack.config())
    async with HeadwayClient(settings) as client:
        started = time.perf_counter()
        await client.submit_many(jobs)
        return len(jobs) / (time.perf_counter() - started)


async def raw_rate(stack: Stack, jobs: list[dict[str, Any]], batched: bool = False) -> float:
    settings = stack.settings()
    await create_topics(settings, stack.config())
    topic = settings.topics.jobs(Priority.NORMAL)
    records = []
    for job in jobs:
        request, value = encode_job(job)
        records.append((request.job_id.encode(), value))
    producer = AIOKafkaProducer(**producer_options(settings))
    await producer.start()
    try:
        started = time.perf_counter()
        if batched:
            batches = RecordBatchSender(producer, settings.producer_linger_ms / 1000)
            futures = {await batches.append(topic, key, value) for key, value in records}
            batches.flush()
            await asyncio.gather(*futures)
        else:
            sent = [await producer.send(topic, value=value, key=key) for key, value in records]
            await asyncio.gather(*sent)
        return len(jobs) / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def measure(stack: Stack, count: int, runs: int) -> list[Rates]:
    """headway beside raw aiokafka sending each record (the target's baseline)."""
    jobs = list(chat_jobs(count, tag="p"))
    return await side_by_side(
        runs, lambda: headway_rate(stack, jobs), lambda: raw_rate(stack, jobs), "raw aiokafka"
    )


async def measure_batched(stack: Stack, count: int, runs: int) -> list[Rates]:
    """headway beside raw aiokafka appending to batches as headway does: what validating and
    encoding each job costs."""
    jobs = list(chat_jobs(count, tag="q"))
    return await side_by_side(
        runs,
        lambda: headway_rate(stack, jobs),
        lambda: raw_rate(stack, jobs, batched=True),
        "raw batches",
    )


if __name__ == "__main__":
    from bench.common import stack

    async def main() -> None:
        async with stack() as st:
            count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
            rates = await measure(st, count, 3)
            batched = await measure_batched(st, count, 3)
        print(f"median ratio {statistics.median(r.ratio for r in rates):.2f}")
        print(f"vs raw batches {statistics.median(r.ratio for r in batched):.2f}")

    asyncio.run(main())
