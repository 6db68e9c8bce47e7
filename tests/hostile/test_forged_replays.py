"""Forged ``headway-replay`` headers cost the forger, never another tenant (issue 33 §6).

Any producer may write ``headway-replay: <dlq partition>:<dlq offset>``. A header naming a
dead letter that does not exist — an offset past the dead-letter topic's end, a partition it
does not have — is answered "not genuine" from the topic's end offsets (asked of the broker at
most once per short interval), with no process-wide lock and off the runners: a victim
tenant's job is not held up behind a dozen such records (it used to wait the 10 s read
timeout of each, one after another, while they held every runner). A forged record ends as
it always did: an ordinary job (a stored result is re-published, a new job runs), and a
genuine ``headway dlq replay`` still runs a failed job again. Real broker, HTTP, database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from broker import dlq
from broker.client import HeadwayClient
from broker.config import development_config
from broker.dlq_lookup import Bounds, Found, LetterLookup, fingerprint
from broker.settings import Settings
from broker.topics import HEADER_REPLAY
from schemas.jobs import Priority
from schemas.results import JobResult
from tests.helpers import chat_job, eventually, running_worker
from tests.integration.test_dlq import break_execution_for, dead_letters
from workers.devstack.simulator import SimulatorServer
from workers.intake.parsing import parse_job
from workers.intake.replay_holds import ReplayHolds
from workers.intake.scheduler import LaneScheduler, QueuedJob
from workers.pipeline.replays import ReplayCheck

OLD_WAIT_S = 10.0  # what each forged header cost before: the dead-letter read's timeout
FORGED = 12


class Arrivals:
    """When each job's results arrived (monotonic), read from the results topic as they come."""

    def __init__(self) -> None:
        self.at: dict[str, list[float]] = {}
        self.results: dict[str, list[JobResult]] = {}

    async def follow(self, client: HeadwayClient) -> None:
        async for result in client.results():
            self.at.setdefault(result.job_id, []).append(time.monotonic())
            self.results.setdefault(result.job_id, []).append(result)

    async def latency(self, client: HeadwayClient, job: dict[str, Any]) -> float:
        """Submit ``job`` and return how long its result took."""
        started = time.monotonic()
        await client.submit(job)
        assert await eventually(lambda: job["job_id"] in self.at, timeout_s=60)
        return self.at[job["job_id"]][0] - started


@contextlib.asynccontextmanager
async def following(client: HeadwayClient) -> AsyncIterator[Arrivals]:
    arrivals = Arrivals()
    task = asyncio.create_task(arrivals.follow(client))
    try:
        yield arrivals
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def send_forged(settings: Settings, named: list[bytes]) -> list[str]:
    """One new job of the ``default`` tenant per header value; returns their job ids."""
    lane = settings.topics.jobs(Priority.NORMAL)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=0)
    await producer.start()
    ids = [f"forged-{i}" for i in range(len(named))]
    try:
        for job_id, header in zip(ids, named, strict=True):
            value = json.dumps(chat_job(job_id, tenant="default")).encode()
            await producer.send(lane, value, key=job_id.encode(), headers=[(HEADER_REPLAY, header)])
        await producer.flush()
    finally:
        await producer.stop()
    return ids


async def test_forged_replay_headers_do_not_hold_up_another_tenants_jobs(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # few runners: forged records holding them would leave none for the victim
    settings = make_settings(database_url=sqlite_url, job_partitions=1, concurrency=2)
    config = development_config(simulator.base_url)
    # past the (empty) dead-letter topic's end, and partitions it does not have
    named = [b"0:%d" % (1_000_000 + i) for i in range(FORGED - 3)] + [b"7:0", b"99:5", b"2:0"]
    async with (
        running_worker(settings, config) as worker,
        HeadwayClient(settings) as client,
        following(client) as arrivals,
    ):
        baseline = await arrivals.latency(client, chat_job("victim-0"))
        forged = await send_forged(settings, named)
        under_attack = await arrivals.latency(client, chat_job("victim-1"))
        print(f"\nFIGURES forged replays: victim {baseline:.3f} s alone, {under_attack:.3f} s "
              f"behind {FORGED} forged headers")  # fmt: skip
        assert under_attack < baseline + OLD_WAIT_S / 4, (baseline, under_attack)
        assert await eventually(lambda: all(job_id in arrivals.at for job_id in forged))
        check = worker.pipeline.replays
        assert check is not None
        assert check.forged == FORGED

        # a genuine replay still runs a failed job again — its dead letter written after the
        # worker learned the topic's (then empty) ends
        break_execution_for({"poison"}, monkeypatch)
        await client.submit(chat_job("poison"))
        assert await eventually(lambda: "poison" in arrivals.at)
        assert arrivals.results["poison"][0].status == "failed"
        [letter] = await dead_letters(settings, 1)
        monkeypatch.undo()  # the fix is deployed
        report = await dlq.replay(settings, dlq.Selection())
        assert report.replayed == 1
        assert await eventually(lambda: len(arrivals.at.get("poison", ())) == 2)
        assert check.forged == FORGED  # the genuine replay was not taken for a forgery

    # forged records end as any new job would: run once, as ordinary jobs
    assert all(arrivals.results[job_id][0].status == "succeeded" for job_id in forged)
    assert all(simulator.stats.jobs[job_id] == 1 for job_id in forged)
    assert [r.status for r in arrivals.results["poison"]] == ["failed", "succeeded"]
    assert simulator.stats.jobs["poison"] == 1
    assert letter.key == b"poison"


# -- on fakes: the lookup, the check and the holds ---------------------------------------------


class FakeLetters:
    """A dead-letter topic in memory: partitions of (key, value) batches. ``short_ends``
    reports an end as Tansu does (the last batch's base offset + 1); ``slow`` partitions
    answer a read only once their event is set."""

    def __init__(self, *partitions: list[list[tuple[bytes, bytes]]], short_ends: bool = False):
        self.batches = [list(batches) for batches in partitions]
        self.short_ends = short_ends
        self.start = [0] * len(partitions)
        self.slow: dict[int, asyncio.Event] = {}
        self.fail_reads = False
        self.bounds_fail: Exception | None = None  # raised by bounds()
        self.read_at: list[tuple[int, int]] = []

    def write(self, partition: int, *letters: tuple[bytes, bytes]) -> list[int]:
        """Append one batch; returns its offsets."""
        first = sum(len(batch) for batch in self.batches[partition])
        self.batches[partition].append(list(letters))
        return list(range(first, first + len(letters)))

    def _records(self, partition: int) -> list[tuple[int, int, tuple[bytes, bytes]]]:
        """(batch base, offset, letter) of every record."""
        out, offset = [], 0
        for batch in self.batches[partition]:
            base = offset
            for letter in batch:
                out.append((base, offset, letter))
                offset += 1
        return out

    async def bounds(self) -> Bounds | None:
        if self.bounds_fail is not None:
            raise self.bounds_fail
        bounds = {}
        for partition in range(len(self.batches)):
            records = self._records(partition)
            end = len(records)
            if self.short_ends and records:
                end = records[-1][0] + 1
            bounds[partition] = (self.start[partition], end)
        return bounds

    async def read_from(self, partition: int, offset: int) -> list[Found] | None:
        self.read_at.append((partition, offset))
        if partition in self.slow:
            await self.slow[partition].wait()
        if self.fail_reads:
            return None
        records = self._records(partition)
        base = next((b for b, o, _ in records if o == offset), offset)
        return [
            Found(o, fingerprint(*letter))
            for _, o, letter in records
            if o >= max(base, offset, self.start[partition])
        ]


class Clock:
    """Time that passes only as the code sleeps — and by a microsecond each time it is read
    (as a real clock does between two reads)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        self.now += 1e-6
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def lookup_over(letters: FakeLetters, clock: Clock | None = None) -> LetterLookup:
    clock = clock or Clock()
    return LetterLookup(letters, refresh_s=0.5, clock=clock, sleep=clock.sleep)


LETTER = (b"job-1", b'{"job_id": "job-1"}')


async def test_a_position_past_the_end_or_in_no_partition_holds_no_letter_and_is_never_read() -> (
    None
):
    letters = FakeLetters([[LETTER]], [])
    lookup = lookup_over(letters)
    answers = await asyncio.gather(
        *(lookup.letter(0, 1_000_000 + i) for i in range(12)),
        lookup.letter(1, 0),  # an empty partition
        lookup.letter(7, 0),  # a partition the topic does not have
    )
    assert answers == [None] * 14
    assert lookup.asks == 1  # one ask of the broker, shared by all fourteen
    assert letters.read_at == [(0, 0)]  # the tail of partition 0, read once; nothing named


async def test_the_broker_is_asked_for_the_ends_at_most_once_per_interval() -> None:
    clock = Clock()
    letters = FakeLetters([[LETTER]])
    lookup = lookup_over(letters, clock)
    assert await lookup.letter(0, 5) is None
    clock.now += 0.1
    assert await lookup.letter(0, 6) is None  # asked again, but not before the interval
    assert lookup.asks == 2 and clock.slept == [pytest.approx(0.4, abs=1e-4)]
    await asyncio.gather(*(lookup.letter(0, 10 + i) for i in range(5)))  # one ask for five
    assert lookup.asks == 3 and clock.slept[1:] == [pytest.approx(0.5, abs=1e-4)]


async def test_a_letter_written_after_the_ends_were_learned_is_found() -> None:
    letters = FakeLetters([[LETTER]])
    lookup = lookup_over(letters)
    assert await lookup.letter(0, 1) is None  # not there yet
    [offset] = letters.write(0, (b"job-2", b"two"))
    assert await lookup.letter(0, offset) == fingerprint(b"job-2", b"two")


async def test_a_letter_in_a_last_batch_past_a_short_reported_end_is_found() -> None:
    letters = FakeLetters([[LETTER]], short_ends=True)
    offsets = letters.write(0, (b"a", b"1"), (b"b", b"2"), (b"c", b"3"))
    lookup = lookup_over(letters)
    assert (await letters.bounds())[0] == (0, offsets[0] + 1)  # as Tansu reports it
    assert await lookup.letter(0, offsets[2]) == fingerprint(b"c", b"3")
    assert await lookup.letter(0, offsets[2] + 1) is None
    assert letters.read_at == [(0, offsets[0])]  # the tail read told both


async def test_a_slow_read_of_one_partition_holds_up_no_other_and_one_position_is_read_once() -> (
    None
):
    letters = FakeLetters([[LETTER], [LETTER]], [[LETTER], [LETTER]])
    lookup = lookup_over(letters)
    await lookup.letter(0, 99)  # learn the ends
    letters.read_at.clear()
    letters.slow[0] = asyncio.Event()
    stuck = [asyncio.create_task(lookup.letter(0, 0)) for _ in range(5)]
    await asyncio.sleep(0)
    assert await asyncio.wait_for(lookup.letter(1, 0), 1) == fingerprint(*LETTER)
    assert not any(task.done() for task in stuck)
    letters.slow[0].set()
    assert await asyncio.gather(*stuck) == [fingerprint(*LETTER)] * 5
    assert letters.read_at.count((0, 0)) == 1


async def test_a_letter_removed_by_retention_is_not_read_and_a_failed_read_is_not_remembered() -> (
    None
):
    letters = FakeLetters([[LETTER]] * 4)
    letters.start[0] = 2
    lookup = lookup_over(letters)
    assert await lookup.letter(0, 0) is None  # below the start
    assert letters.read_at == [(0, 3)]  # the tail only
    letters.read_at.clear()
    letters.fail_reads = True
    assert await lookup.letter(0, 2) is None  # the broker away
    letters.fail_reads = False
    assert await lookup.letter(0, 2) == fingerprint(*LETTER)
    assert letters.read_at == [(0, 2), (0, 2)]


async def test_a_broker_that_cannot_answer_is_asked_again_only_after_the_interval() -> None:
    clock = Clock()
    letters = FakeLetters([[LETTER]])
    letters.bounds_fail = RuntimeError("no broker")
    lookup = lookup_over(letters, clock)
    with pytest.raises(RuntimeError):
        await lookup.letter(0, 0)
    letters.bounds_fail = None
    before = clock.now
    assert await lookup.letter(0, 0) == fingerprint(*LETTER)
    assert lookup.asks == 2 and clock.now - before == pytest.approx(0.5, abs=1e-3)


def replayed_record(named: bytes, key: bytes = LETTER[0], value: bytes = LETTER[1]) -> Any:
    return ConsumerRecord(
        "jobs.normal", 0, 5, 0, 0, key, value, None, 0, 0, [(HEADER_REPLAY, named)]
    )


async def test_only_a_header_naming_the_records_own_dead_letter_is_genuine() -> None:
    check = ReplayCheck(lookup_over(FakeLetters([[LETTER, (b"other", b"x")]])), "dlq")
    assert await check.genuine(replayed_record(b"0:0"))
    assert not await check.genuine(replayed_record(b"0:1"))  # another letter's bytes
    assert not await check.genuine(replayed_record(b"0:0", value=b"changed"))
    assert not await check.genuine(replayed_record(b"0:99"))
    assert check.forged == 3
    for garbage in (b"\xb2:0", "²:1".encode(), b"x:y", b"-1:0", b"0:" + b"9" * 60):
        assert not await check.genuine(replayed_record(garbage))  # refused, never raised
    assert check.forged == 3


def queued(
    job_id: str, headers: list[tuple[str, bytes | None]], tenant: str = "demo", offset: int = 0
) -> QueuedJob:
    value = json.dumps(chat_job(job_id, tenant=tenant)).encode()
    record: Any = ConsumerRecord(
        "jobs.normal", 0, offset, 0, 0, job_id.encode(), value, None, 0, 0, headers
    )
    return QueuedJob(
        record,
        Priority.NORMAL,
        TopicPartition("jobs.normal", 0),
        len(value),
        tenant,
        parse_job(value, 1 << 20),
    )


async def test_a_job_whose_replay_header_is_checked_waits_off_the_runners() -> None:
    scheduler = LaneScheduler(3, 1 << 20)
    verdicts: dict[str, asyncio.Future[bool]] = {}

    async def genuine(record: Any) -> bool:
        verdicts[record.key.decode()] = future = asyncio.get_running_loop().create_future()
        return await future

    holds = ReplayHolds(genuine, scheduler)
    forged = queued("forged", [(HEADER_REPLAY, b"0:999")], tenant="default")
    scheduler.put(forged)
    scheduler.put(queued("victim", [], offset=1))
    runner = await scheduler.get()
    assert holds.hold(runner) and len(holds) == 1  # handed over: the runner is free
    victim = await scheduler.get()
    assert victim.record.key == b"victim" and not holds.hold(victim)
    assert len(scheduler) == 0 and scheduler.room(Priority.NORMAL) == 2  # held counts
    await asyncio.sleep(0)  # the check starts
    verdicts["forged"].set_result(False)
    back = await asyncio.wait_for(scheduler.get(), 1)
    assert back is forged and back.replay is False
    assert not holds.hold(back)  # checked: it runs now, unchecked again
    assert scheduler.room(Priority.NORMAL) == 3


async def test_held_jobs_of_revoked_partitions_are_given_up_with_their_checks() -> None:
    scheduler = LaneScheduler(10, 1 << 20)
    never: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def genuine(record: Any) -> bool:
        return await never

    holds = ReplayHolds(genuine, scheduler)
    held = queued("replayed", [(HEADER_REPLAY, b"0:1")])
    assert holds.hold(held)
    assert holds.drop({TopicPartition("jobs.normal", 1)}) == []
    assert holds.drop({TopicPartition("jobs.normal", 0)}) == [held]
    assert len(holds) == 0 and scheduler.room(Priority.NORMAL) == 10
    await asyncio.sleep(0)
    assert len(scheduler) == 0  # its check, cancelled, puts nothing back
    assert not holds.hold(queued("plain", []))
    assert not ReplayHolds(None, scheduler).hold(queued("r", [(HEADER_REPLAY, b"0:1")]))
