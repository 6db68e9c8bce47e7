"""Spilling, on an in-memory ledger: what a full lane does with a fetched job, when a spilled
record's offset counts as finished, and how spilled jobs come back, finish and are given back.

The ledger's statements themselves run on SQLite and PostgreSQL in
tests/integration/test_spilled_jobs.py; the whole path in test_same_lane_fairness.py."""

from __future__ import annotations

import functools
import json
from collections import Counter
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from broker.errors import LedgerRefused
from schemas.jobs import Priority
from tests.helpers import chat_job
from workers.intake.offsets import OffsetTracker
from workers.intake.parsing import ValidJob, parse_job
from workers.intake.scheduler import LaneScheduler, QueuedJob
from workers.intake.spill import SPILLED, Spill
from workers.ledger.spill_rows import SpilledRecord, Taken

NORMAL = Priority.NORMAL
TP = TopicPartition("jobs.normal", 0)
WEIGHTS = {"heavy": 3.0}


def weight(tenant: str) -> float:
    return WEIGHTS.get(tenant, 1.0)


class MemorySpillLedger:
    """The spill statements, kept in a dict: enough to drive :class:`Spill` through every
    branch (a test may make it fail)."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple[SpilledRecord, str | None]] = {}
        self.failing: Exception | None = None
        self.calls: Counter[str] = Counter()

    async def run(self, work: Any) -> Any:
        assert isinstance(work, functools.partial)
        name, kw = work.func.__name__, work.keywords
        self.calls[name] += 1
        if self.failing is not None:
            raise self.failing
        if name == "store":
            if any(record.account == "refused" for record in kw["records"]):
                raise LedgerRefused("the database refused a value")
            for record in kw["records"]:
                self.rows[len(self.rows) + 1] = (record, None)
            return None
        if name == "take":
            taken = [
                Taken(id, record, 0.0)
                for id, (record, owner) in sorted(self.rows.items())
                if owner is None and record.lane == kw["lane"]
            ][: kw["limit"]]
            for job in taken:
                self.rows[job.id] = (job.record, kw["owner"])
            return taken
        if name == "finish":
            for id in kw["ids"]:
                self.rows.pop(id, None)
            return None
        if name == "release":
            chosen = kw.get("ids") or list(self.rows)
            for id in chosen:
                if id in self.rows and self.rows[id][1] == kw["owner"]:
                    self.rows[id] = (self.rows[id][0], None)
            return len(chosen)
        if name == "waiting_accounts":
            found: dict[str, Counter[str]] = {}
            for record, owner in self.rows.values():
                if owner is None:
                    found.setdefault(record.lane, Counter())[record.account] += 1
            return found
        return 0  # reclaim, renew


def fetched(tenant: str, offset: int, value: bytes | None = None) -> QueuedJob:
    if value is None:
        value = json.dumps(chat_job(f"{tenant}-{offset}", tenant=tenant)).encode()
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        TP.topic, 0, offset, 1_000, 0, None, value, None, -1, len(value), [("h", b"\x00")]
    )
    return QueuedJob(record, NORMAL, TP, len(value), tenant, parse_job(value, 1_000_000))


def spill_over(
    bound: int = 4, refill_to: int | None = None
) -> tuple[Spill, LaneScheduler, OffsetTracker, MemorySpillLedger]:
    scheduler = LaneScheduler(bound, 1_000_000, weight=weight)
    tracker = OffsetTracker()
    ledger = MemorySpillLedger()
    spill = Spill(
        ledger.run,
        scheduler,
        tracker,
        owner="w1",
        lease_s=30.0,
        weight=weight,
        max_message_bytes=1_000_000,
        refill_to=bound if refill_to is None else refill_to,
        clock=lambda: 100.0,
    )
    return spill, scheduler, tracker, ledger


def fill(scheduler: LaneScheduler, tracker: OffsetTracker, tenant: str, count: int) -> None:
    for offset in range(count):
        job = fetched(tenant, offset)
        tracker.add(TP, offset)
        scheduler.put(job)


def spills(spill: Spill, tenant: str) -> bool:
    """Whether a job of ``tenant`` fetched now into the normal lane would be spilled."""
    return spill.pressed(NORMAL) and spill.wants(NORMAL, tenant)


def test_a_lane_with_room_buffers_every_job() -> None:
    spill, scheduler, _, _ = spill_over()
    scheduler.put(fetched("a", 0))
    assert not spills(spill, "a")


def test_a_full_lane_spills_the_tenant_over_its_share_and_buffers_a_newcomer() -> None:
    spill, scheduler, tracker, _ = spill_over()
    fill(scheduler, tracker, "a", 4)
    assert scheduler.full(NORMAL)
    assert spills(spill, "a")
    assert not spills(spill, "b")  # B's first jobs are served beside A's


def test_weights_set_the_shares_of_a_full_lane() -> None:
    spill, scheduler, tracker, _ = spill_over(bound=8)
    fill(scheduler, tracker, "heavy", 5)
    fill(scheduler, tracker, "light", 3)
    assert not spills(spill, "heavy")  # 5 of its 6 (3/4 of 8)
    assert spills(spill, "light")  # 3 of its 2


def test_a_tenant_waiting_in_the_ledger_spills_even_below_the_bound() -> None:
    spill, scheduler, _, _ = spill_over(bound=100)
    spill.add(fetched("a", 0))
    assert spills(spill, "a")  # its jobs queue behind its spilled ones
    scheduler.put(fetched("b", 0))
    for offset in range(1, 50):
        scheduler.put(fetched("b", offset))
    # B holds its share beside A's waiting jobs: what comes next waits for A's turns
    assert spills(spill, "b")


async def test_a_job_that_does_not_parse_is_never_spilled() -> None:
    spill, scheduler, tracker, _ = spill_over()
    fetcher = fetcher_over(spill, scheduler, PausingConsumer(normal_partition()))
    fill(scheduler, tracker, "a", 4)
    tp = normal_partition()
    bad = ConsumerRecord(tp.topic, 0, 9, 0, 0, None, b'{"tenant": "a", "job_id": ', None, -1, 9, [])
    await fetcher._take({tp: [bad]})
    assert spill.pending == 0 and len(scheduler) == 5  # it ends at once, rejected


async def test_a_job_is_spilled_on_its_identity_and_validated_when_it_comes_back() -> None:
    spill, scheduler, tracker, _ = spill_over(bound=4, refill_to=8)
    fetcher = fetcher_over(spill, scheduler, PausingConsumer(normal_partition()))
    fill(scheduler, tracker, "a", 4)
    tp = normal_partition()
    value = json.dumps(chat_job("a-9", tenant="a", batch_id="nightly")).encode()
    await fetcher._take({tp: [ConsumerRecord(tp.topic, 0, 9, 0, 0, None, value, None, -1, 9, [])]})
    assert spill.pending == 1
    await spill.store()
    for _ in range(4):
        await scheduler.get()  # the buffer empties
    assert await spill._refill() == 1
    back = await scheduler.get()
    assert isinstance(back.intake, ValidJob) and back.intake.job.batch_id == "nightly"


async def test_a_spilled_offset_is_finished_only_once_its_row_is_stored() -> None:
    spill, _, tracker, ledger = spill_over()
    tracker.add(TP, 0)
    spill.add(fetched("a", 0))
    ledger.failing = ConnectionError("database down")
    with pytest.raises(ConnectionError):
        await spill.store()
    assert spill.pending == 1
    assert tracker.to_commit() == {TP: 0}  # not yet: the record would be lost
    ledger.failing = None
    await spill.store()
    assert spill.pending == 0 and spill.stored == 1
    assert tracker.to_commit() == {TP: 1}


async def test_spilled_jobs_come_back_as_they_were_fetched() -> None:
    spill, scheduler, tracker, ledger = spill_over(bound=10)
    original = fetched("a", 7)
    tracker.add(TP, 7)
    spill.add(original)
    await spill.store()
    assert await spill._refill() == 1
    back = await scheduler.get()
    assert back.tp == SPILLED and back.spill_id == 1
    assert back.record.value == original.record.value
    assert back.record.headers == [("h", b"\x00")]
    assert back.intake == original.intake
    assert back.waited_s == 100.0  # spilled at 0.0 by the memory ledger, taken at 100.0
    assert ledger.rows[1][1] == "w1"


async def test_finished_rows_go_and_unrun_ones_wait_again() -> None:
    spill, scheduler, _, ledger = spill_over(bound=10)
    for offset in range(3):
        spill.add(fetched("a", offset))
    await spill.store()
    await spill._refill()
    done, failed, held = [await scheduler.get() for _ in range(3)]
    spill.finished(done)
    spill.give_back(failed)
    await spill.settle()
    assert done.spill_id not in ledger.rows
    assert failed.spill_id is not None and ledger.rows[failed.spill_id][1] is None
    assert held.spill_id is not None and ledger.rows[held.spill_id][1] == "w1"
    await spill.close()  # draining: everything still held waits again
    assert ledger.rows[held.spill_id][1] is None


async def test_a_lane_without_room_takes_nothing_from_the_ledger() -> None:
    spill, scheduler, tracker, ledger = spill_over(bound=2)
    spill.add(fetched("a", 0))
    await spill.store()
    fill(scheduler, tracker, "b", 2)
    assert await spill._refill() == 0
    assert ledger.calls["take"] == 0


class PausingConsumer:
    """What the fetcher asks of its consumer when it applies backpressure."""

    def __init__(self, *partitions: TopicPartition) -> None:
        self.partitions = set(partitions)
        self.paused: set[TopicPartition] = set()

    def assignment(self) -> set[TopicPartition]:
        return self.partitions

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)


def fetcher_over(spill: Spill | None, scheduler: LaneScheduler, consumer: Any) -> Any:
    from broker.topics import Topics
    from workers.intake.fetching import Fetcher
    from workers.intake.parked import ParkedJobs

    topics = Topics("jobs")
    return Fetcher(
        consumer,
        topics,
        scheduler,
        ParkedJobs(10),
        OffsetTracker(),
        chunk=4,
        max_message_bytes=1_000_000,
        spill=spill,
    )


def normal_partition() -> TopicPartition:
    from broker.topics import Topics

    return TopicPartition(Topics("jobs").jobs(Priority.NORMAL), 0)


async def test_a_full_lane_keeps_fetching_while_spilled_jobs_are_stored() -> None:
    spill, scheduler, tracker, ledger = spill_over()
    consumer = PausingConsumer(normal_partition())
    fetcher = fetcher_over(spill, scheduler, consumer)
    fill(scheduler, tracker, "a", 4)
    fetcher._apply_backpressure()
    assert not consumer.paused  # full, but what does not fit goes to the ledger
    ledger.failing = ConnectionError("database down")
    spill.add(fetched("a", 9))
    await fetcher._store_spilled()
    fetcher._apply_backpressure()
    assert consumer.paused  # the ledger cannot take it: the lane pauses, as without a spill
    ledger.failing = None
    await fetcher._store_spilled()
    fetcher._apply_backpressure()
    assert not consumer.paused


def test_without_a_spill_a_full_lane_pauses() -> None:
    _, scheduler, tracker, _ = spill_over()
    consumer = PausingConsumer(normal_partition())
    fetcher = fetcher_over(None, scheduler, consumer)
    fill(scheduler, tracker, "a", 4)
    fetcher._apply_backpressure()
    assert consumer.paused


async def test_time_waited_in_the_ledger_counts_for_priority_aging() -> None:
    clock = [1000.0]
    scheduler = LaneScheduler(10, 1_000_000, aging_s=30.0, clock=lambda: clock[0])
    scheduler.put(fetched("a", 0))  # a fresh normal job
    spilled_low = fetched("b", 1)
    spilled_low.lane = Priority.LOW
    spilled_low.waited_s = 95.0  # taken from the ledger after 95 s there
    scheduler.put(spilled_low)
    assert (await scheduler.get()).lane == Priority.LOW  # three agings: above normal


async def test_a_worker_takes_from_the_ledger_only_what_its_runners_will_start_soon() -> None:
    spill, _, _, _ = spill_over(bound=100, refill_to=10)
    for offset in range(50):
        spill.add(fetched("a", offset))
    await spill.store()
    assert await spill._refill() == 10  # the rest stays for the other workers
    assert await spill._refill() == 0


async def test_a_record_the_ledger_refuses_waits_in_memory_and_the_rest_are_stored() -> None:
    spill, scheduler, tracker, ledger = spill_over(bound=100)
    for offset, tenant in enumerate(["a", "refused", "a"]):
        tracker.add(TP, offset)
        spill.add(fetched(tenant, offset))
    await spill.store()
    assert spill.pending == 0 and spill.stored == 2
    assert [job.tenant for job in [await scheduler.get()]] == ["refused"]
    assert len(ledger.rows) == 2
    assert tracker.to_commit() == {TP: 1}  # the refused one finishes on its own path


async def test_a_buffer_smaller_than_the_refill_is_refilled_when_half_empty() -> None:
    spill, scheduler, _, _ = spill_over(bound=8, refill_to=600)
    for offset in range(20):
        spill.add(fetched("a", offset))
    await spill.store()
    assert await spill._refill() == 8
    for _ in range(3):
        await scheduler.get()
    assert await spill._refill() == 0  # room for 3: not yet
    await scheduler.get()
    assert await spill._refill() == 4  # room for half the buffer
