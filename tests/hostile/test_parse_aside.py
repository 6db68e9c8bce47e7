"""Parsing what intake admits never holds the event loop: the largest shapes a record may have
(65,536 JSON values in 240 KB) still take tens of milliseconds to parse, and a fetch of 40 of
them parsed on the loop held every tenant's jobs for over a second. A large record is parsed in
a thread; the loop keeps turning (issue 33, the general properties)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from tests.helpers import chat_job
from tests.unit.test_spill import PausingConsumer, fetcher_over, normal_partition
from workers.intake import parsing
from workers.intake.parsing import PARSE_ASIDE_BYTES, ValidJob, parse_job, parse_job_aside
from workers.intake.scheduler import LaneScheduler

MAX_BYTES = 1024 * 1024
#: a job at intake's value bound: 60,000 empty objects in its prediction (~35 ms to parse)
WIDEST = chat_job("w", params={"prediction": {"type": "content", "content": [{}] * 60_000}})
RECORDS = 40


class LoopGaps:
    """The longest the event loop went without running this ticker, while it ran."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last)
            last = now

    async def __aenter__(self) -> LoopGaps:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._task is not None
        await asyncio.sleep(0)  # the ticker sees the gap up to now
        self._task.cancel()


def widest_value(job_id: str) -> bytes:
    return json.dumps({**WIDEST, "job_id": job_id}, separators=(",", ":")).encode()


def test_the_widest_job_intake_admits_is_large_enough_to_be_parsed_aside() -> None:
    value = widest_value("w-0")
    assert PARSE_ASIDE_BYTES <= len(value) <= MAX_BYTES
    assert isinstance(parse_job(value, MAX_BYTES), ValidJob)  # admitted: only its cost is at issue


async def test_a_fetch_of_the_widest_jobs_intake_admits_does_not_hold_the_loop() -> None:
    scheduler = LaneScheduler(4096, 256 * MAX_BYTES)
    fetcher = fetcher_over(None, scheduler, PausingConsumer(normal_partition()))
    tp = normal_partition()
    records = [
        ConsumerRecord(tp.topic, 0, n, 0, 0, None, value, None, -1, len(value), [])
        for n, value in enumerate(widest_value(f"w-{n}") for n in range(RECORDS))
    ]
    started = time.perf_counter()
    async with LoopGaps() as gaps:
        await fetcher._take({tp: records})
    took = time.perf_counter() - started
    assert len(scheduler) == RECORDS  # every one queued
    # parsed on the loop, the fetch held it for all of `took` (> 1 s here); aside, the loop
    # waits at most for one parse's C steps (a few ms; margin for a loaded machine)
    assert gaps.longest < min(0.1, took / 4), (gaps.longest, took)


async def test_a_small_job_is_parsed_on_the_loop_and_a_large_one_in_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []

    def watched(value: bytes | None, max_bytes: int) -> Any:
        threads.append(threading.get_ident())
        return parse_job(value, max_bytes)

    monkeypatch.setattr(parsing, "parse_job", watched)
    small = json.dumps(chat_job("s"), separators=(",", ":")).encode()
    assert isinstance(await parse_job_aside(small, MAX_BYTES), ValidJob)
    assert isinstance(await parse_job_aside(widest_value("w"), MAX_BYTES), ValidJob)
    loop = threading.get_ident()
    assert threads[0] == loop and threads[1] != loop
