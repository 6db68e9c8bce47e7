"""The fuzz campaign against a running worker, over the real broker, the bundled simulator (on
three wires: OpenAI, Anthropic, Gemini) and a real database (SQLite and PostgreSQL): hostile
job records from ``tests/hostile/generators.py`` — content parts, tools, schemas, predictions,
metadata, names, tool calls — interleaved with valid jobs of the same producer and with a
victim tenant's signed jobs, while hostile control commands (cancels and budget sets with
hostile dates, names, values and bad signatures) go to the control topic.

Properties: the worker never exits; every record ends as a result or a dead letter with a
reason; committed offsets reach the partitions' ends; every valid job succeeds; the victim's
jobs keep flowing (none waits more than :data:`VICTIM_STALL_S`); no connection, name lookup,
``urllib`` request or canary open happens but to the simulator, the broker and the database
(an audit hook in this process, which runs the worker, and a canary server that must never be
called); no result's error holds a canary's secret or an exception's repr; after the hostile
control traffic, a cancel and an operator's budget set still apply — the later set wins.

Seeded by ``HEADWAY_FUZZ_SEED``; ``HEADWAY_FUZZ_FULL=1`` runs the full sizes
(docs/reliability.md, "Fuzz campaign over the newer fields").
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import select

from broker import dlq
from broker.client import sign
from broker.config import HeadwayConfig, parse_config
from broker.kafka import topic_partitions
from broker.settings import Settings
from broker.topics import HEADER_SIGNATURE, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION
from schemas.jobs import Priority
from tests.helpers import committed, running_worker
from tests.hostile.commands import control
from tests.hostile.generators import Fuzz, Targets
from tests.hostile.producer import Header, hostile_producer
from tests.hostile.watch import Canary, watching
from workers.devstack.simulator import SimulatorServer
from workers.ledger.database.engine import create_engine
from workers.ledger.database.models import BudgetRow
from workers.ledger.quota_rows import TOTAL, batch_account

FUZZ_SEED = int(os.environ.get("HEADWAY_FUZZ_SEED", "33"))
FULL = os.environ.get("HEADWAY_FUZZ_FULL", "") not in ("", "0")
HOSTILE_JOBS = 1000 if FULL else 160
VALID_JOBS = 200 if FULL else 40  # the hostile producer's own valid jobs
VICTIM_JOBS = 100 if FULL else 30  # another tenant's signed jobs, sent among them
CONTROL_COMMANDS = 200 if FULL else 40
VICTIM_STALL_S = 5.0  # the measure of a stall (§6: "past 5 s")
MAX_RECORD_BYTES = 1_000_000  # under the brokers' default message.max.bytes (1 MiB + 12)
ROUTES = ["summarize", "claude", "gemini"]
SECRET_ENV = "HEADWAY_FUZZ_VICTIM_SECRET"
VICTIM_SECRET = "victim-signing-secret"
SEED = f"(HEADWAY_FUZZ_SEED={FUZZ_SEED})"
#: what an exception's repr or a traceback looks like inside a message
REPR = re.compile(r"Traceback|\b[A-Z]\w*(Error|Exception)\(|<[\w.]+ object at 0x")


def config(simulator: SimulatorServer) -> HeadwayConfig:
    def route(provider: str, model: str) -> dict[str, Any]:
        deployment = {
            "provider": provider,
            "model": model,
            "input_usd_per_mtok": 0.15,
            "output_usd_per_mtok": 0.6,
        }
        return {"kind": "chat", "strategy": "cheapest", "deployments": [deployment]}

    return parse_config(
        {
            "providers": {
                "simulator": {"type": "simulator", "base_url": simulator.base_url},
                "claude": {"type": "anthropic", "base_url": simulator.root_url},
                "gemini": {"type": "gemini", "base_url": f"{simulator.root_url}/v1beta"},
            },
            "routes": {
                "summarize": route("simulator", "sim-chat-mini"),
                "claude": route("claude", "sim-claude"),
                "gemini": route("gemini", "sim-gemini"),
            },
            "tenants": {
                "victim": {"signing_secret_env": SECRET_ENV, "require_signed_cancels": True},
                "acme": {},
            },
        },
        "fuzz campaign config",
    )


def _job(job_id: str, tenant: str, batch_id: str, route: str = "summarize") -> bytes:
    return json.dumps(
        {
            "job_id": job_id,
            "tenant": tenant,
            "kind": "chat",
            "route": route,
            "batch_id": batch_id,
            "messages": [{"role": "user", "content": f"Please summarise document {job_id}."}],
        }
    ).encode()


async def _read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` up to its end offsets now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic, wait_s=10)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def _committed_all(settings: Settings, ends: dict[TopicPartition, int]) -> dict[Any, int]:
    offsets: dict[TopicPartition, int] = {}
    for _ in range(600):
        offsets = {tp: await committed(settings, tp) for tp in ends}
        if offsets == ends:
            break
        await asyncio.sleep(0.2)
    return offsets


async def _budget_limit(database_url: str, tenant: str, batch_id: str) -> int | None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            row = await conn.execute(
                select(BudgetRow.limit_nusd).where(
                    BudgetRow.tenant == batch_account(tenant, batch_id), BudgetRow.period == TOTAL
                )
            )
            return row.scalar_one_or_none()
    finally:
        await engine.dispose()


async def test_a_fuzz_campaign_over_the_newer_fields_never_reaches_out_stalls_or_loses_a_record(
    make_settings: Callable[..., Settings],
    database_url: str,
    simulator: SimulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, VICTIM_SECRET)
    canary_file = tmp_path / "canary-secret.json"
    canary_file.write_text('{"secret": "CANARY-FILE-SECRET"}')
    settings = make_settings(database_url=database_url, job_partitions=2)
    lane = settings.topics.jobs(Priority.NORMAL)
    bootstrap = settings.kafka_bootstrap or ""
    async with Canary() as canary, hostile_producer(bootstrap) as producer:
        fuzz = Fuzz(FUZZ_SEED, Targets(http=canary.url, file=str(canary_file)))
        records: list[tuple[str, bytes, list[Header], str]] = []  # kind, value, headers, id
        for i in range(HOSTILE_JOBS):  # the largest a broker takes: cut (near-JSON) beyond it
            value = fuzz.job(f"f-{i}", "acme", fuzz.pick(*ROUTES))[:MAX_RECORD_BYTES]
            records.append(("hostile", value, [], f"f-{i}"))
        for i in range(VALID_JOBS):
            value = _job(f"ok-{i}", "acme", "acme-valid", fuzz.pick(*ROUTES))
            records.insert(fuzz.rng.randrange(len(records) + 1), ("valid", value, [], f"ok-{i}"))
        for i in range(VICTIM_JOBS):
            value = _job(f"v-{i}", "victim", "fuzz")
            signed: list[Header] = [(HEADER_SIGNATURE, sign(value, VICTIM_SECRET).encode())]
            records.insert(
                fuzz.rng.randrange(len(records) + 1), ("victim", value, signed, f"v-{i}")
            )
        commands = [
            control(fuzz, "victim", "fuzz", VICTIM_SECRET)  # the victim's batch: signed wrongly
            if fuzz.rng.random() < 0.5
            else control(fuzz, "acme", "ctl", None)  # another batch than acme's jobs use
            for _ in range(CONTROL_COMMANDS)
        ]
        commands.append(
            (
                json.dumps(
                    {
                        "action": "set_budget",
                        "tenant": "acme",
                        "batch_id": "ctl",
                        "budget_usd": 0,
                        "at": "9999-12-31T23:59:59Z",
                    }
                ).encode(),
                [],
            )
        )
        await producer.client.force_metadata_update()
        endpoints: set[tuple[str, int | None]] = {
            (broker.host, broker.port) for broker in producer.client.cluster.brokers()
        }
        for url in (bootstrap, simulator.root_url, database_url):
            parts = urlsplit(url if "//" in url else f"kafka://{url}")
            if parts.hostname and parts.port:
                endpoints.add((parts.hostname, parts.port))
        forbidden = (str(canary_file), "/etc/passwd", "/x.jar")
        sent: list[tuple[str, int, int, str, float]] = []  # kind, partition, offset, id, at
        with watching(endpoints, forbidden) as watch:
            async with running_worker(settings, config(simulator)) as worker:
                for index, (kind, value, headers, job_id) in enumerate(records):
                    if index % max(1, len(records) // len(commands)) == 0 and commands:
                        command, command_headers = commands.pop()
                        await producer.send_and_wait(
                            settings.topics.control, command, headers=command_headers
                        )
                    meta = await producer.send_and_wait(
                        lane,
                        value,
                        key=job_id.encode(),
                        headers=headers,
                        partition=index % 2,
                    )
                    sent.append((kind, meta.partition, meta.offset, job_id, time.time()))
                for command, command_headers in commands:
                    await producer.send_and_wait(
                        settings.topics.control, command, headers=command_headers
                    )
                ends: dict[TopicPartition, int] = {}
                for _, partition, offset, _, _ in sent:
                    tp = TopicPartition(lane, partition)
                    ends[tp] = max(ends.get(tp, 0), offset + 1)
                offsets = await _committed_all(settings, ends)
                # after the hostile control traffic: an operator's cap, and a cancel, still apply
                now = datetime.now(UTC).isoformat()
                operator = {
                    "action": "set_budget",
                    "tenant": "acme",
                    "batch_id": "ctl",
                    "budget_usd": 7,
                    "at": now,
                }
                await producer.send_and_wait(settings.topics.control, json.dumps(operator).encode())
                cancel = {"action": "cancel", "tenant": "acme", "job_id": "late-1"}
                await producer.send_and_wait(settings.topics.control, json.dumps(cancel).encode())
                await asyncio.sleep(3.0)  # the control follower applies both within a refresh
                await producer.send_and_wait(lane, _job("late-1", "acme", "late"), key=b"late-1")
                results = await _wait_for(bootstrap, settings.topics.results, "late-1")
                letters = [letter async for letter in dlq.read(settings, dlq.Selection())]
                alive = all(not task.done() for task in worker._tasks)
        limit = await _budget_limit(database_url, "acme", "ctl")

    by_id: dict[str, list[Any]] = {}
    for record in results:
        by_id.setdefault((record.key or b"").decode(), []).append(record)
    lettered = set()
    for letter in letters:
        named = dict((n, v) for n, v in letter.headers if v is not None)
        assert letter.error, f"a dead letter without a reason {SEED}"
        lettered.add((int(named[HEADER_SOURCE_PARTITION]), int(named[HEADER_SOURCE_OFFSET])))
    lost = [s for s in sent if (s[1], s[2]) not in lettered and s[3] not in by_id]
    failed_valid, stall, slowest = [], 0.0, 0.0
    hostile_statuses: Counter[str] = Counter()
    for kind, _, _, job_id, at in sent:
        if by_id.get(job_id):
            slowest = max(slowest, by_id[job_id][0].timestamp / 1000 - at)
        if kind == "hostile":
            for record in by_id.get(job_id, [])[:1]:
                hostile_statuses[json.loads(record.value)["status"]] += 1
            continue
        statuses = [json.loads(r.value)["status"] for r in by_id.get(job_id, [])]
        if not statuses or set(statuses) != {"succeeded"}:
            failed_valid.append((job_id, statuses))
        if kind == "victim" and by_id.get(job_id):
            stall = max(stall, by_id[job_id][0].timestamp / 1000 - at)
    leaks = []
    for record in results:
        error = (json.loads(record.value).get("error") or {}).get("message") or ""
        if "CANARY" in error or REPR.search(error):
            leaks.append(error[:300])
    late = [json.loads(r.value)["status"] for r in by_id.get("late-1", [])]
    stuck = sum(1 for tp in ends if offsets.get(tp) != ends[tp])
    hostile = sum(1 for s in sent if s[0] == "hostile")
    print(  # the figures docs/reliability.md reports (pytest -s)
        f"fuzz worker {SEED}: {len(sent)} job records ({hostile} hostile, "
        f"{len(sent) - hostile} valid), {CONTROL_COMMANDS + 1} control commands, "
        f"{len(letters)} dead letters, {len(by_id)} job ids answered (hostile ones: "
        f"{dict(sorted(hostile_statuses.items()))}), worker deaths "
        f"{0 if alive else 1}, stuck partitions {stuck}, records lost {len(lost)}, connections "
        f"besides the expected {len(watch.seen) + len(canary.requests)}, victim's longest wait "
        f"{stall:.1f} s, longest a record waited for its result {slowest:.1f} s, simulator "
        f"requests {simulator.stats.calls}"
    )
    assert alive, f"a worker task ended {SEED}"
    assert not watch.seen and not canary.requests, (watch.seen[:5], canary.requests[:5], SEED)
    assert offsets == ends, f"committed {offsets}, partitions end at {ends} {SEED}"
    assert not lost, f"{len(lost)} records with no result and no dead letter {SEED}"
    assert not failed_valid, f"valid jobs that did not succeed: {failed_valid[:5]} {SEED}"
    assert stall <= VICTIM_STALL_S, f"the victim's jobs waited {stall:.1f} s {SEED}"
    assert not leaks, f"results holding a fetched document or an exception: {leaks[:3]} {SEED}"
    assert late == ["cancelled"], f"a cancel after the campaign was not applied: {late} {SEED}"
    assert limit == 7 * 10**9, f"the operator's later cap lost to a hostile date: {limit} {SEED}"


async def _wait_for(bootstrap: str, topic: str, job_id: str, timeout_s: float = 30.0) -> list[Any]:
    """The results topic's records, read again until one for ``job_id`` is there."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = await _read_all(bootstrap, topic)
        if any(r.key == job_id.encode() for r in records) or time.monotonic() > deadline:
            return records
        await asyncio.sleep(0.5)
