"""What a ledger-held queue would cost (issue 21's design, docs/architecture.md): how fast a
worker can put queued jobs into the ledger, take the next ones fairly, and read job records
from the broker. ``python -m bench.queue_costs`` (PostgreSQL at HEADWAY_TEST_POSTGRES_URL or
127.0.0.1:5432, SQLite in a temporary file, the embedded broker)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer

from bench.common import chat_jobs, stack
from broker.admin import create_topics
from broker.client import HeadwayClient
from broker.kafka import topic_partitions
from schemas.jobs import Priority

ROWS = 200_000
TENANTS = 1_000
TAKE = 20_000  # jobs dequeued fairly, 64 tenants a statement
PAYLOAD = json.dumps(
    {
        "job_id": "x" * 20,
        "tenant": "t",
        "kind": "chat",
        "route": "summarize",
        "messages": [{"role": "user", "content": "y" * 250}],
    }
).encode()
DDL = """
CREATE TABLE queued (
  tenant TEXT NOT NULL, job_id TEXT NOT NULL, lane SMALLINT NOT NULL, batch_id TEXT,
  enqueued_at DOUBLE PRECISION NOT NULL, payload BYTEA NOT NULL,
  PRIMARY KEY (tenant, job_id));
CREATE INDEX queued_next ON queued (lane, tenant, enqueued_at);
"""
COLUMNS = ["tenant", "job_id", "lane", "batch_id", "enqueued_at", "payload"]
FAIR_TAKE_PG = """
DELETE FROM queued q USING (
  SELECT x.tenant, x.job_id FROM unnest($1::text[]) AS t(tenant)
  CROSS JOIN LATERAL (
    SELECT tenant, job_id FROM queued WHERE lane = 1 AND tenant = t.tenant
    ORDER BY enqueued_at LIMIT 1 FOR UPDATE SKIP LOCKED) x) n
WHERE q.tenant = n.tenant AND q.job_id = n.job_id RETURNING q.payload
"""


def _rows() -> list[tuple[Any, ...]]:
    """90 % of the jobs from one heavy tenant, the rest spread over the others."""
    now = time.time()
    return [
        (
            "heavy" if i < ROWS * 0.9 else f"t{i % TENANTS}",
            f"j{i}",
            1,
            None,
            now + i * 1e-6,
            PAYLOAD,
        )
        for i in range(ROWS)
    ]


def _per_s(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}"


async def postgres(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP TABLE IF EXISTS queued")
        await conn.execute(DDL)
        rows = _rows()
        started = time.perf_counter()
        for i in range(0, ROWS, 5000):
            await conn.copy_records_to_table("queued", records=rows[i : i + 5000], columns=COLUMNS)
        copy_s = time.perf_counter() - started
        await conn.execute("TRUNCATE queued")
        insert = "INSERT INTO queued VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"
        started = time.perf_counter()
        for i in range(0, ROWS, 1000):
            await conn.executemany(insert, rows[i : i + 1000])
        many_s = time.perf_counter() - started
        await conn.execute("ANALYZE queued")
        size = await conn.fetchval("SELECT pg_total_relation_size('queued')")
        tenants = [r["tenant"] for r in await conn.fetch("SELECT DISTINCT tenant FROM queued")]
        taken, started = 0, time.perf_counter()
        while taken < TAKE:
            got = await conn.fetch(FAIR_TAKE_PG, random.sample(tenants, min(64, len(tenants))))
            if not got:
                break
            taken += len(got)
        take_s = time.perf_counter() - started
        await conn.execute("DROP TABLE queued")
    finally:
        await conn.close()
    return [
        f"PostgreSQL: COPY {_per_s(ROWS, copy_s)} rows/s; executemany {_per_s(ROWS, many_s)} "
        f"rows/s; fair dequeue {_per_s(taken, take_s)} jobs/s; {size / ROWS:.0f} bytes a row",
    ]


def sqlite(directory: Path) -> list[str]:
    db = sqlite3.connect(directory / "queue.db", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(
            DDL.replace("BYTEA", "BLOB")
            .replace("DOUBLE PRECISION", "REAL")
            .replace("SMALLINT", "INTEGER")
        )
        rows = _rows()
        started = time.perf_counter()
        for i in range(0, ROWS, 1000):
            db.execute("BEGIN")
            db.executemany(
                "INSERT OR IGNORE INTO queued VALUES (?, ?, ?, ?, ?, ?)", rows[i : i + 1000]
            )
            db.execute("COMMIT")
        insert_s = time.perf_counter() - started
        tenants = [r[0] for r in db.execute("SELECT DISTINCT tenant FROM queued")]
        oldest = (
            "SELECT job_id FROM queued WHERE lane = 1 AND tenant = ? ORDER BY enqueued_at LIMIT 1"
        )
        taken, started = 0, time.perf_counter()
        while taken < TAKE:
            db.execute("BEGIN")
            got = 0
            for tenant in random.sample(tenants, min(64, len(tenants))):
                row = db.execute(oldest, (tenant,)).fetchone()
                if row is not None:
                    db.execute(
                        "DELETE FROM queued WHERE tenant = ? AND job_id = ?", (tenant, row[0])
                    )
                    got += 1
            db.execute("COMMIT")
            if not got:
                break
            taken += got
        take_s = time.perf_counter() - started
    finally:
        db.close()
    return [
        f"SQLite: executemany {_per_s(ROWS, insert_s)} rows/s; fair dequeue "
        f"{_per_s(taken, take_s)} jobs/s"
    ]


async def broker_read() -> list[str]:
    """Publish ROWS jobs with the SDK, then read them back decoding each one's tenant."""
    async with stack(latency_ms=0) as st:
        settings, config = st.settings(), st.config()
        await create_topics(settings, config)
        async with HeadwayClient(settings) as client:
            started = time.perf_counter()
            await client.submit_many(chat_jobs(ROWS, tag="q"))
            publish_s = time.perf_counter() - started
        consumer = AIOKafkaConsumer(
            bootstrap_servers=st.bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        try:
            tps = await topic_partitions(consumer, settings.topics.jobs(Priority.NORMAL), wait_s=10)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            seen, tenants, started = 0, set(), time.perf_counter()
            while seen < ROWS:
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                for records in batches.values():
                    for record in records:
                        tenants.add(json.loads(record.value or b"{}").get("tenant"))
                        seen += 1
            read_s = time.perf_counter() - started
        finally:
            await consumer.stop()
    return [
        f"embedded broker: submit_many {_per_s(ROWS, publish_s)} jobs/s; read and decode "
        f"{_per_s(ROWS, read_s)} records/s (one process)"
    ]


async def main() -> None:
    url = os.environ.get(
        "HEADWAY_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    ).replace("postgresql+asyncpg://", "postgresql://")
    lines = await postgres(url)
    with tempfile.TemporaryDirectory() as directory:
        lines += sqlite(Path(directory))
    lines += await broker_read()
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
