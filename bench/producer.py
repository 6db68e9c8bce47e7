"""Producer: ``HeadwayClient.submit_many`` vs raw aiokafka producing the same bytes.

headway's side takes job dicts and validates, encodes, keys and routes each to its lane; the
raw side gets the bytes headway would produce, already encoded, and sends them with the same
producer options to the same topic. Both wait until the broker has every record.

    python -m bench.producer [JOBS]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.common import Stack, chat_jobs
from broker.admin import create_topics
from broker.client import HeadwayClient, encode_job
from broker.kafka import producer_options
from schemas.jobs import Priority


@dataclass
class ProducerRates:
    headway: float
    raw: float

    @property
    def ratio(self) -> float:
        return self.headway / self.raw


async def headway_rate(stack: Stack, jobs: list[dict[str, Any]]) -> float:
    settings = stack.settings()
    await create_topics(settings, stack.config())
    async with HeadwayClient(settings) as client:
        started = time.perf_counter()
        await client.submit_many(jobs)
        return len(jobs) / (time.perf_counter() - started)


async def raw_rate(stack: Stack, jobs: list[dict[str, Any]]) -> float:
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
        futures = [await producer.send(topic, value=value, key=key) for key, value in records]
        await asyncio.gather(*futures)
        return len(jobs) / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def measure(stack: Stack, count: int, runs: int) -> list[ProducerRates]:
    jobs = list(chat_jobs(count, tag="p"))
    rates = []
    for run in range(runs):
        if run % 2 == 0:
            h = await headway_rate(stack, jobs)
            r = await raw_rate(stack, jobs)
        else:
            r = await raw_rate(stack, jobs)
            h = await headway_rate(stack, jobs)
        rates.append(ProducerRates(h, r))
        print(f"  run {run + 1}: submit_many {h:,.0f} jobs/s, raw aiokafka {r:,.0f}, {h / r:.2f}")
    return rates


if __name__ == "__main__":
    from bench.common import stack

    async def main() -> None:
        async with stack() as st:
            rates = await measure(st, int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, 3)
        print(f"median ratio {statistics.median(r.ratio for r in rates):.2f}")

    asyncio.run(main())
