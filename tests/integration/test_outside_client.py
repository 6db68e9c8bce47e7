"""An outside client needs nothing from headway: plain JSON in, plain JSON out, over any Kafka
client. This module deliberately imports no headway code."""

from __future__ import annotations

import asyncio
import json

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def test_a_plain_kafka_client_submits_jobs_and_reads_results(
    headway_worker: tuple[str, str],
) -> None:
    bootstrap, prefix = headway_worker
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(5):
            job = {
                "job_id": f"outside-{i}",
                "tenant": "demo",
                "kind": "chat",
                "route": "summarize",
                "batch_id": "outside",
                "messages": [{"role": "user", "content": f"Summarise item {i}."}],
                "metadata": {"row": i},
            }
            await producer.send(
                f"{prefix}.jobs.normal", json.dumps(job).encode(), key=job["job_id"].encode()
            )
        await producer.send(
            f"{prefix}.jobs.high",
            json.dumps(
                {
                    "job_id": "outside-emb",
                    "tenant": "demo",
                    "kind": "embedding",
                    "route": "embed",
                    "input": "vector me",
                    "batch_id": "outside",
                }
            ).encode(),
            key=b"outside-emb",
        )
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        f"{prefix}.results",
        bootstrap_servers=bootstrap,
        group_id=f"{prefix}-reader",
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
    )
    await consumer.start()
    results: dict[str, dict[str, object]] = {}
    try:
        async with asyncio.timeout(60):
            async for record in consumer:
                result = json.loads(record.value)
                assert record.key.decode() == result["job_id"]
                results[result["job_id"]] = result
                if len(results) == 6:
                    break
    finally:
        await consumer.stop()

    assert all(r["status"] == "succeeded" for r in results.values())
    assert results["outside-3"]["metadata"] == {"row": 3}
    assert isinstance(results["outside-3"]["output"]["text"], str)  # type: ignore[index]
    assert len(results["outside-emb"]["output"]["embeddings"]) == 1  # type: ignore[index]
