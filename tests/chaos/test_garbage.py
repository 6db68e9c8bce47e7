"""Garbage interleaved with valid jobs: the worker never dies, every bad message lands in the
DLQ with a reason (and, when it names a job, gets a `rejected` result), every valid job
succeeds. Real broker, real HTTP, real database."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer

from broker.config import development_config
from broker.settings import Settings
from broker.topics import HEADER_ERROR
from schemas.jobs import Priority
from tests.chaos.conftest import size
from tests.helpers import chat_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer

BAD = size(2000, 10_000)
VALID = size(200, 1000)
MAX_MESSAGE_BYTES = 64 * 1024


def _valid(i: int) -> bytes:
    return json.dumps(chat_job(f"bad-{i}")).encode()


def _kinds(rng: random.Random) -> dict[str, Callable[[int], bytes]]:
    """Each kind of bad message, made for bad message number ``i``."""
    return {
        "random bytes": lambda i: rng.randbytes(rng.randint(0, 300)),
        "truncated JSON": lambda i: _valid(i)[: rng.randint(1, len(_valid(i)) - 2)],
        "wrong types": lambda i: json.dumps(
            chat_job(f"bad-{i}", messages="hello", priority=7, max_cost_usd="cheap")
        ).encode(),
        "huge string": lambda i: json.dumps(chat_job(f"bad-{i}", route="x" * 50_000)).encode(),
        # deeper than Python's recursion limit, within the size limit
        "deep nesting": lambda i: (
            b'{"job_id": "bad-%d", "metadata": ' % i + b"[" * 20_000 + b"]" * 20_000 + b"}"
        ),
        "invalid UTF-8": lambda i: _valid(i).replace(b"Please", b"Pl\xc3\x28ase"),
        "oversized": lambda i: json.dumps(
            chat_job(f"bad-{i}", metadata={"blob": "y" * (MAX_MESSAGE_BYTES + 10)})
        ).encode(),
        "NaN / Infinity": lambda i: _valid(i)[:-1] + b', "max_cost_usd": NaN}',
        "duplicate keys": lambda i: _valid(i)[:-1] + b', "job_id": "other-%d"}' % i,
        "not an object": lambda i: rng.choice([b"[]", b"42", b'"job"', b"null", b"true"]),
        "unknown field": lambda i: json.dumps(chat_job(f"bad-{i}", colour="red")).encode(),
        "lone surrogate": lambda i: _valid(i).replace(b"Please", b"\\ud800Please"),
    }


async def test_garbage_around_valid_jobs_is_dead_lettered_and_the_valid_jobs_succeed(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    figures: Callable[..., None],
) -> None:
    rng = random.Random(2026)
    kinds = _kinds(rng)
    names = sorted(kinds)
    settings = make_settings(
        database_url=sqlite_url, max_message_bytes=MAX_MESSAGE_BYTES, concurrency=64
    )
    lane = settings.topics.jobs(Priority.NORMAL)
    sent: Counter[str] = Counter()
    kind_of: dict[str, str] = {}
    valid_every = BAD // VALID
    async with running_worker(settings, development_config(simulator.base_url)) as worker:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, max_request_size=4_000_000
        )
        await producer.start()
        try:
            for i in range(BAD):
                name = names[i % len(names)]
                key = f"bad-{i}"
                await producer.send(lane, kinds[name](i), key=key.encode())
                sent[name] += 1
                kind_of[key] = name
                if i % valid_every == 0:
                    job = chat_job(f"ok-{i // valid_every}")
                    await producer.send(lane, json.dumps(job).encode(), key=job["job_id"].encode())
            await producer.flush()
        finally:
            await producer.stop()
        dlq = await read_topic(
            settings.kafka_bootstrap or "",
            settings.topics.dlq,
            until_keys=BAD,
            timeout_s=300,
            decode=False,
        )
        for _ in range(60):  # the valid jobs' results, among the bad ones' rejections
            results = await read_topic(
                settings.kafka_bootstrap or "",
                settings.topics.results,
                until_keys=10**9,
                timeout_s=2,
            )
            if sum(1 for key in results.by_key if key.startswith("ok-")) >= VALID:
                break
        alive = all(not task.done() for task in worker._tasks + worker._runners)
    assert alive, "a worker task died"
    valid = {k: v for k, v in results.by_key.items() if k.startswith("ok-")}
    assert len(valid) == VALID
    assert {copies[0]["status"] for copies in valid.values()} == {"succeeded"}
    dead_keys = {k for k in dlq.by_key if k.startswith("bad-")}
    assert dead_keys == set(kind_of), sorted(set(kind_of) - dead_keys)[:10]
    reasons: dict[str, set[str]] = {}
    for record in dlq.records:
        reason = dict(record.headers)[HEADER_ERROR].decode()
        assert reason, record.key
        summary = re.sub(r"\d+", "N", reason)[:60]
        reasons.setdefault(kind_of[record.key.decode()], set()).add(summary)
    rejected = [
        copies[0] for k, copies in results.by_key.items() if k.startswith("bad-")
    ]  # bad messages whose job_id and tenant could be read
    assert all(r["status"] == "rejected" for r in rejected)
    assert all(r["error"]["code"] == "invalid_request" for r in rejected)
    figures(
        bad_messages=BAD,
        valid_jobs=VALID,
        by_kind=dict(sent),
        dead_lettered=len(dead_keys),
        rejected_results=len(rejected),
        succeeded=len(valid),
        reasons={k: sorted(v) for k, v in reasons.items()},
    )
    assert not _unexpected(reasons)


def _unexpected(reasons: dict[str, Any]) -> list[str]:
    """Reasons that say headway's own code failed (never expected for bad input)."""
    return [k for k, v in reasons.items() if any("internal_error" in r for r in v)]
