"""A hostile-record campaign against a running worker on the real broker, on SQLite and on
PostgreSQL: hundreds of records an outside client can write — any bytes in keys, header names
and header values (null included), valid jobs with hostile field contents, near-valid JSON,
oversize values — interleaved with valid jobs.

Invariants: the worker never exits; every record ends as a result or a dead letter with a
reason; every partition's committed offset reaches its end; every valid job succeeds.

The records come from a seeded generator (``CAMPAIGN_SEED``; ``HEADWAY_CAMPAIGN_SEED`` picks
another), so a failure names the seed that reproduces it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import TopicPartition

from broker import dlq
from broker.config import development_config
from broker.settings import Settings
from broker.topics import (
    HEADER_ATTEMPTS,
    HEADER_NOT_BEFORE,
    HEADER_ONLINE,
    HEADER_REPLAY,
    HEADER_RETRY_COUNT,
    HEADER_SIGNATURE,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    HEADER_TRACEPARENT,
)
from schemas.jobs import Priority
from tests.helpers import chat_job, committed, read_topic, running_worker
from tests.hostile.producer import Header, RawName, hostile_producer
from workers.devstack.simulator import SimulatorServer

CAMPAIGN_SEED = int(os.environ.get("HEADWAY_CAMPAIGN_SEED", "19"))
HOSTILE_RECORDS = 240
VALID_JOBS = 80
MAX_MESSAGE_BYTES = 64 * 1024
HEADER_NAMES = [
    HEADER_TRACEPARENT,
    HEADER_SOURCE_TOPIC,
    HEADER_REPLAY,
    HEADER_SIGNATURE,
    HEADER_RETRY_COUNT,
    HEADER_NOT_BEFORE,
    HEADER_ONLINE,
    HEADER_ATTEMPTS,
    "x-anything",
]
NASTY_TEXT = [
    "\u0000",
    "x\u0000y",
    "\u0085",
    "\x7f",
    "\u202e",
    "\ufeff",
    "\ud83d\ude00",
    "ＡＣＭＥ",
    "аcme",
    "DEMO",
    " ",
    "",
    "a" * 300,
    "../../etc",
    "acme.bad topic!",
]
NASTY_NUMBERS: list[Any] = [10**20, -(10**20), -1, 0, 2**63, 2**31, 1.5, True, None, "7"]


@dataclass
class Sent:
    """One record written: where it landed, and whether it is a plain valid job."""

    partition: int
    offset: int
    job_id: str | None
    valid: bool


def _valid(job_id: str) -> bytes:
    return json.dumps(chat_job(job_id, batch_id="campaign")).encode()


def _mutated(rng: random.Random, job_id: str) -> bytes:
    job: dict[str, Any] = chat_job(job_id)
    field = rng.choice(
        ["tenant", "route", "batch_id", "kind", "reply_topic", "template", "params", "metadata"]
    )
    if field == "template":
        job.pop("messages")
        job["template"] = {
            "name": rng.choice(NASTY_TEXT) or "t",
            "version": rng.choice(NASTY_NUMBERS),
        }
    elif field == "params":
        name = rng.choice(["max_tokens", "seed", "temperature", "dimensions", "stop"])
        job["params"] = {name: rng.choice(NASTY_NUMBERS + NASTY_TEXT)}
    elif field == "metadata":  # nested as deep as a writer likes (written as text)
        depth = rng.choice([1, 50, 5000])
        job["metadata"] = "DEEP"
        deep = '{"k": ' * depth + json.dumps(rng.choice(NASTY_TEXT)) + "}" * depth
        return json.dumps(job).replace('"DEEP"', deep).encode()
    else:
        job[field] = rng.choice(NASTY_TEXT + NASTY_NUMBERS)
    return json.dumps(job).encode()


def _near_json(rng: random.Random, job_id: str) -> bytes:
    text = _valid(job_id).decode()
    choice = rng.randrange(6)
    if choice == 0:
        return text[: rng.randrange(1, len(text))].encode()  # truncated
    if choice == 1:
        return text.replace('"tenant"', '"tenant": "demo", "tenant"').encode()  # duplicate key
    if choice == 2:
        return text.replace("}", ', "max_cost_usd": NaN}', 1).encode()
    if choice == 3:
        return (text + " trailing").encode()
    if choice == 4:
        return text.replace('"demo"', '"\\ud800"').encode()  # a lone surrogate escape
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))  # any bytes


def _hostile(rng: random.Random, index: int) -> tuple[bytes | None, bytes | None, list[Header]]:
    job_id = f"h-{index}"
    key: bytes | None = rng.choice(
        [job_id.encode(), None, b"", bytes(rng.randrange(256) for _ in range(8))]
    )
    headers: list[Header] = []
    for _ in range(rng.randrange(4)):
        name_bytes = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12)))
        name: str = rng.choice([rng.choice(HEADER_NAMES), RawName(name_bytes)])
        header = rng.choice([None, b"", bytes(rng.randrange(256) for _ in range(20)), b"0:0"])
        headers.append((name, header))
    kind = rng.randrange(5)
    value: bytes | None
    if kind == 0:
        value = _valid(job_id)  # a valid job, hostile only in its key and headers
    elif kind == 1:
        value = _mutated(rng, job_id)
    elif kind == 2:
        value = _near_json(rng, job_id)
    elif kind == 3:
        value = rng.choice([None, b"", b"x" * (MAX_MESSAGE_BYTES + 1)])  # tombstone, oversize
        if value is None and key is None:
            key = b"tombstone"  # aiokafka writes no record with neither
    else:
        value = _mutated(rng, job_id) if rng.random() < 0.5 else _near_json(rng, job_id)
    return key, value, headers


async def _committed_all(settings: Settings, ends: dict[TopicPartition, int]) -> dict[Any, int]:
    offsets: dict[TopicPartition, int] = {}
    for _ in range(300):
        offsets = {tp: await committed(settings, tp) for tp in ends}
        if offsets == ends:
            break
        await asyncio.sleep(0.2)
    return offsets


async def test_a_hostile_record_campaign_never_stops_the_worker_or_stalls_a_partition(
    make_settings: Callable[..., Settings], database_url: str, simulator: SimulatorServer
) -> None:
    rng = random.Random(CAMPAIGN_SEED)
    settings = make_settings(
        database_url=database_url, job_partitions=2, max_message_bytes=MAX_MESSAGE_BYTES
    )
    lane = settings.topics.jobs(Priority.NORMAL)
    records: list[tuple[bytes | None, bytes | None, list[Header], str | None, bool]] = []
    for i in range(HOSTILE_RECORDS):
        key, value, headers = _hostile(rng, i)
        records.append((key, value, headers, f"h-{i}", False))
    for i in range(VALID_JOBS):
        records.insert(
            rng.randrange(len(records) + 1), (None, _valid(f"ok-{i}"), [], f"ok-{i}", True)
        )
    sent: list[Sent] = []
    async with running_worker(settings, development_config(simulator.base_url)) as worker:
        async with hostile_producer(settings.kafka_bootstrap or "") as producer:
            for index, (key, value, headers, job_id, valid) in enumerate(records):
                partition = index % 2
                meta = await producer.send_and_wait(
                    lane,
                    value,
                    key=key,
                    headers=headers,
                    partition=partition,
                )
                sent.append(Sent(meta.partition, meta.offset, job_id, valid))
        ends: dict[TopicPartition, int] = {}
        for record in sent:
            tp = TopicPartition(lane, record.partition)
            ends[tp] = max(ends.get(tp, 0), record.offset + 1)
        offsets = await _committed_all(settings, ends)
        bootstrap = settings.kafka_bootstrap or ""
        results = await read_topic(
            bootstrap, settings.topics.results, until_keys=VALID_JOBS, timeout_s=20
        )
        letters = [letter async for letter in dlq.read(settings, dlq.Selection())]
        alive = all(not task.done() for task in worker._tasks)
        undecodable = worker.fetcher.undecodable if worker.fetcher is not None else 0

    seed = f"(HEADWAY_CAMPAIGN_SEED={CAMPAIGN_SEED})"
    assert alive, f"a worker task ended {seed}"
    assert offsets == ends, f"committed {offsets}, partitions end at {ends} {seed}"
    for i in range(VALID_JOBS):
        statuses = [r["status"] for r in results.by_key.get(f"ok-{i}", [])]
        assert statuses and set(statuses) == {"succeeded"}, (f"ok-{i}", statuses, seed)
    lettered = set()
    for letter in letters:
        named = dict((n, v) for n, v in letter.headers if v is not None)
        assert letter.error, f"a dead letter without a reason {seed}"
        assert named.get(HEADER_SOURCE_TOPIC) == lane.encode()
        lettered.add((int(named[HEADER_SOURCE_PARTITION]), int(named[HEADER_SOURCE_OFFSET])))
    answered = {key for key, copies in results.by_key.items() if copies}
    unaccounted = [
        r for r in sent if (r.partition, r.offset) not in lettered and r.job_id not in answered
    ]
    assert not unaccounted, f"{len(unaccounted)} records with no result and no dead letter {seed}"
    stuck = sum(1 for tp in ends if offsets.get(tp) != ends[tp])
    print(  # the figures docs/reliability.md reports (pytest -s)
        f"campaign {seed}: {len(sent)} records ({VALID_JOBS} valid), {len(letters)} dead "
        f"letters ({undecodable} undecodable), {len(answered)} job ids answered, worker "
        f"deaths {0 if alive else 1}, stuck partitions {stuck}, unaccounted {len(unaccounted)}"
    )
