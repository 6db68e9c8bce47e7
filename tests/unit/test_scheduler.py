"""The lane buffer serves high before normal before low, and is bounded per lane."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from schemas.jobs import Priority
from workers.scheduler import LaneScheduler, QueuedJob


def job(lane: Priority, offset: int, partition: int = 0, size: int = 10) -> QueuedJob:
    record: Any = type("Record", (), {"offset": offset})()
    return QueuedJob(record, lane, TopicPartition(f"jobs.{lane.value}", partition), size)


async def test_runners_take_high_before_normal_before_low() -> None:
    scheduler = LaneScheduler(100, 10_000)
    scheduler.put(job(Priority.LOW, 1))
    scheduler.put(job(Priority.NORMAL, 2))
    scheduler.put(job(Priority.HIGH, 3))
    order = [(await scheduler.get()).lane for _ in range(3)]
    assert order == [Priority.HIGH, Priority.NORMAL, Priority.LOW]


async def test_a_waiting_runner_gets_the_next_job() -> None:
    scheduler = LaneScheduler(100, 10_000)
    waiter = asyncio.create_task(scheduler.get())
    await asyncio.sleep(0)
    scheduler.put(job(Priority.LOW, 9))
    assert (await waiter).record.offset == 9


def test_each_lane_is_bounded_on_its_own() -> None:
    scheduler = LaneScheduler(4, 10_000)
    for i in range(4):
        scheduler.put(job(Priority.LOW, i))
    assert scheduler.full(Priority.LOW)
    assert not scheduler.full(Priority.HIGH)
    assert not scheduler.has_room(Priority.LOW)


def test_bytes_bound_a_lane_too() -> None:
    scheduler = LaneScheduler(1000, 100)
    scheduler.put(job(Priority.NORMAL, 0, size=60))
    assert not scheduler.full(Priority.NORMAL)
    scheduler.put(job(Priority.NORMAL, 1, size=60))
    assert scheduler.full(Priority.NORMAL)


def test_dropping_partitions_forgets_only_their_queued_jobs() -> None:
    scheduler = LaneScheduler(100, 10_000)
    scheduler.put(job(Priority.LOW, 1, partition=0))
    scheduler.put(job(Priority.LOW, 2, partition=1))
    assert scheduler.drop({TopicPartition("jobs.low", 0)}) == 1
    assert len(scheduler) == 1


async def test_a_cancelled_waiter_does_not_lose_a_job() -> None:
    scheduler = LaneScheduler(100, 10_000)
    waiter = asyncio.create_task(scheduler.get())
    await asyncio.sleep(0)
    scheduler.put(job(Priority.HIGH, 5))
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert len(scheduler) in (0, 1)
    if len(scheduler) == 1:
        assert (await scheduler.get()).record.offset == 5
    else:
        assert waiter.result().record.offset == 5
