"""The naive relay driving ``litellm.Router``, run in its own virtualenv (bench/litellm_side.py).

Standalone on purpose: it imports aiokafka and litellm, nothing from headway. Two modes:

- ``throughput``: consume ``expected`` jobs, ``router.acompletion`` each (at most
  ``concurrency`` at once), produce a small result; prints jobs/s after the first result.
- ``latency``: paced calls (``rate`` a second for ``seconds``), each through the router and
  each as a bare ``httpx`` POST of the same body, alternating; prints both medians and p99s.
  The router's added latency is the difference.

Output: one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any


def router(simulator_url: str, concurrency: int) -> Any:
    import litellm

    litellm.telemetry = False
    return litellm.Router(
        model_list=[
            {
                "model_name": "summarize",
                "litellm_params": {
                    "model": "openai/sim-chat-mini",
                    "api_base": simulator_url,
                    "api_key": "sk-simulator",
                    "max_parallel_requests": concurrency,
                },
            }
        ],
        num_retries=0,
    )


async def throughput(args: argparse.Namespace) -> dict[str, float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    r = router(args.simulator_url, args.concurrency)
    consumer = AIOKafkaConsumer(
        args.jobs_topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, linger_ms=5)
    await consumer.start()
    await producer.start()
    slots = asyncio.Semaphore(args.concurrency)
    done = 0
    first = last = 0.0
    finished = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def handle(value: bytes, key: bytes | None) -> None:
        nonlocal done, first, last
        try:
            job = json.loads(value)
            reply = await r.acompletion(
                model="summarize", messages=job["messages"], **job.get("params", {})
            )
            result = {"job_id": job["job_id"], "text": reply.choices[0].message.content}
            await (await producer.send(args.results_topic, json.dumps(result).encode(), key=key))
        finally:
            slots.release()
        done += 1
        last = time.perf_counter()
        if done == 1:
            first = last
        if done == args.expected:
            finished.set()

    consumed = 0
    try:
        async for record in consumer:
            await slots.acquire()
            task = asyncio.create_task(handle(record.value, record.key))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            consumed += 1
            if consumed == args.expected:
                break
        await asyncio.wait_for(finished.wait(), 600)
    finally:
        await consumer.stop()
        await producer.stop()
    return {"jobs_per_s": (args.expected - 1) / (last - first)}


async def latency(args: argparse.Namespace) -> dict[str, float]:
    import httpx

    r = router(args.simulator_url, args.concurrency)
    messages = [{"role": "user", "content": "Summarise the benchmark document number 7."}]
    body = {"model": "sim-chat-mini", "messages": messages, "max_tokens": 16}
    routed: list[float] = []
    bare: list[float] = []
    async with httpx.AsyncClient(base_url=args.simulator_url) as client:

        async def one(i: int) -> None:
            started = time.perf_counter()
            if i % 2:
                await r.acompletion(model="summarize", messages=messages, max_tokens=16)
                routed.append(time.perf_counter() - started)
            else:
                (await client.post("/chat/completions", json=body)).json()
                bare.append(time.perf_counter() - started)

        for i in range(20):  # warm both paths (imports, connections)
            await one(i)
        routed.clear()
        bare.clear()
        tasks = []
        started = time.perf_counter()
        for i in range(int(args.rate * args.seconds)):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(max(0.0, started + (i + 1) / args.rate - time.perf_counter()))
        await asyncio.gather(*tasks)

    def pct(values: list[float], share: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000

    return {
        "router_p50_ms": pct(routed, 0.5),
        "router_p99_ms": pct(routed, 0.99),
        "bare_p50_ms": pct(bare, 0.5),
        "bare_p99_ms": pct(bare, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["throughput", "latency"])
    parser.add_argument("--bootstrap", default="")
    parser.add_argument("--jobs-topic", default="")
    parser.add_argument("--results-topic", default="")
    parser.add_argument("--group", default="litellm-relay")
    parser.add_argument("--simulator-url", required=True)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--expected", type=int, default=0)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    run = throughput if args.mode == "throughput" else latency
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
