"""The lane buffer serves high before normal before low, and is bounded per lane."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from schemas.jobs import Priority
from workers.intake.scheduler import LaneScheduler, QueuedJob


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
    assert [job.record.offset for job in scheduler.drop({TopicPartition("jobs.low", 0)})] == [1]
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


def tenant_job(tenant: str, offset: int, lane: Priority = Priority.NORMAL) -> QueuedJob:
    record: Any = type("Record", (), {"offset": offset})()
    return QueuedJob(record, lane, TopicPartition(f"jobs.{lane.value}", 0), 10, tenant)


async def test_a_deep_backlog_does_not_starve_a_tenant_with_a_few_jobs() -> None:
    scheduler = LaneScheduler(100_000, 10**9)
    for i in range(10_000):
        scheduler.put(tenant_job("backfill", i))
    for i in range(10):
        scheduler.put(tenant_job("small", 10_000 + i))
    served = [(await scheduler.get()).tenant for _ in range(20)]
    assert served.count("small") == 10  # taking turns: all ten within the first twenty


async def test_tenants_share_a_lane_by_weight() -> None:
    weights = {"gold": 3.0, "bronze": 1.0, "tin": 0.5}
    scheduler = LaneScheduler(100_000, 10**9, weight=lambda t: weights[t])
    for tenant in weights:
        for i in range(1000):
            scheduler.put(tenant_job(tenant, i))
    served = [(await scheduler.get()).tenant for _ in range(900)]
    shares = {t: served.count(t) / len(served) for t in weights}
    assert abs(shares["gold"] - 3 / 4.5) < 0.02
    assert abs(shares["bronze"] - 1 / 4.5) < 0.02
    assert abs(shares["tin"] - 0.5 / 4.5) < 0.02


async def test_within_a_tenant_jobs_keep_their_order() -> None:
    scheduler = LaneScheduler(100, 10_000)
    for i in range(5):
        scheduler.put(tenant_job("a", i))
        scheduler.put(tenant_job("b", 100 + i))
    order = [(await scheduler.get()).record.offset for _ in range(10)]
    assert [o for o in order if o < 100] == [0, 1, 2, 3, 4]


async def test_aging_lets_a_waiting_low_job_through_sustained_high_work() -> None:
    now = [0.0]
    scheduler = LaneScheduler(100_000, 10**9, aging_s=10.0, clock=lambda: now[0])
    scheduler.put(tenant_job("t", 1, Priority.LOW))
    for i in range(100):
        scheduler.put(tenant_job("t", 100 + i, Priority.HIGH))
    assert (await scheduler.get()).lane is Priority.HIGH
    now[0] = 19.9  # one level of aging: low ranks as normal, still below high
    assert (await scheduler.get()).lane is Priority.HIGH
    now[0] = 20.0  # two levels: low now ranks with high, and high ties go to the older lane…
    assert (await scheduler.get()).lane in (Priority.HIGH, Priority.LOW)
    now[0] = 30.0  # …three levels: it is served first
    lanes = [(await scheduler.get()).lane for _ in range(2)]
    assert Priority.LOW in lanes


async def test_without_aging_priority_is_strict() -> None:
    now = [0.0]
    scheduler = LaneScheduler(100_000, 10**9, aging_s=None, clock=lambda: now[0])
    scheduler.put(tenant_job("t", 1, Priority.LOW))
    for i in range(5):
        scheduler.put(tenant_job("t", 100 + i, Priority.HIGH))
    now[0] = 10_000.0
    assert [(await scheduler.get()).lane for _ in range(6)][-1] is Priority.LOW
