"""Dead letters can be listed and, after a fix, replayed: a job that failed on headway's own bug
runs again and succeeds; replaying twice calls no provider twice; selection by time, count
and pattern; the CLI prints them as JSON lines. Real broker, HTTP and database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from broker import dlq
from broker.client import HeadwayClient
from broker.config import development_config
from broker.settings import Settings
from broker.topics import HEADER_REPLAY, HEADER_SIGNATURE
from schemas.jobs import Priority
from tests.helpers import chat_job, read_topic, running_worker
from workers.calls.executor import Executor
from workers.devstack.simulator import SimulatorServer


def break_execution_for(job_ids: set[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in headway's own code that strikes after the job was claimed."""
    original = Executor.execute

    async def execute(self: Executor, job: Any, *args: Any, **kwargs: Any) -> Any:
        if job.job_id in job_ids:
            raise KeyError(f"bug on {job.job_id}")
        return await original(self, job, *args, **kwargs)

    monkeypatch.setattr(Executor, "execute", execute)


async def dead_letters(settings: Settings, count: int) -> list[dlq.DeadLetter]:
    for _ in range(100):
        letters = [letter async for letter in dlq.read(settings, dlq.Selection())]
        if len(letters) >= count:
            return letters
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} dead letters, found {len(letters)}")


async def test_a_job_that_failed_on_a_bug_runs_again_when_replayed_after_the_fix(
    make_settings: Callable[..., Settings],
    postgres_url: str,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(database_url=postgres_url, job_partitions=2)
    config = development_config(simulator.base_url)
    break_execution_for({"poison-1", "poison-2"}, monkeypatch)
    jobs = [chat_job("poison-1"), chat_job("poison-2"), *(chat_job(f"ok-{i}") for i in range(8))]
    async with running_worker(settings, config), HeadwayClient(settings) as client:
        await client.submit_many(jobs)
        first = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=10
        )
        assert first.by_key["poison-1"][0]["status"] == "failed"
        assert first.by_key["poison-1"][0]["error"]["code"] == "internal_error"
        letters = await dead_letters(settings, 2)
        assert {(letter.key or b"").decode() for letter in letters} == {"poison-1", "poison-2"}
        # the reason names the error's type, never its text (issue 33 §1)
        assert all(letter.error == "internal_error: KeyError" for letter in letters)

        monkeypatch.undo()  # the fix is deployed
        only_one = dlq.Selection.parse(None, None, r"poison-1\b")
        report = await dlq.replay(settings, only_one)
        assert report.replayed == 1
        assert report.by_topic == {settings.topics.jobs(Priority.NORMAL): 1}
        await _wait_for(lambda: simulator.stats.jobs["poison-1"] == 1)
        again = await dlq.replay(settings, only_one)  # twice: the stored success is re-published
        assert again.replayed == 1
        results = await _results_until(settings, "poison-1", copies=3)
    replayed = [r for r in results if r["status"] == "succeeded"]
    assert len(replayed) == 2 and replayed[0] == replayed[1]  # one run, published twice
    assert simulator.stats.jobs["poison-1"] == 1
    assert simulator.stats.jobs["poison-2"] == 0  # not selected, not replayed
    assert all(simulator.stats.jobs[f"ok-{i}"] == 1 for i in range(8))


async def _wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    for _ in range(int(timeout_s * 10)):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


async def _results_until(settings: Settings, key: str, copies: int) -> list[dict[str, Any]]:
    for _ in range(20):
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=10, timeout_s=1
        )
        if len(results.by_key[key]) >= copies:
            return results.by_key[key]
        await asyncio.sleep(0.2)
    raise AssertionError(f"{key}: fewer than {copies} results")


async def test_a_replay_keeps_the_original_bytes_and_headers_and_goes_back_to_its_lane(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url, job_partitions=1)
    high = settings.topics.jobs(Priority.HIGH)
    async with running_worker(settings, development_config(simulator.base_url)):
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            headers = [(HEADER_SIGNATURE, b"v1=abc"), ("traceparent", b"00-x-y-01")]
            await producer.send_and_wait(high, b"\xffnot json", key=b"garbage", headers=headers)
        finally:
            await producer.stop()
        [letter] = await dead_letters(settings, 1)
        assert dlq.replay_topic(letter, settings.topics) == high
        sent = dlq.replay_headers(letter)
        assert sent[:2] == headers
        assert sent[2] == (HEADER_REPLAY, f"{letter.partition}:{letter.offset}".encode())
        await dlq.replay(settings, dlq.Selection())
        letters = await dead_letters(settings, 2)  # still garbage: dead-lettered once more
    assert letters[1].value == b"\xffnot json"
    assert letters[1].sources[-1] == high
    assert dict(letters[1].headers)[HEADER_REPLAY] == dict(sent)[HEADER_REPLAY]


async def test_selection_by_time_count_and_pattern_and_the_cli_lists_json_lines(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url, job_partitions=1)
    lane = settings.topics.jobs(Priority.NORMAL)
    async with running_worker(settings, development_config(simulator.base_url)):
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            for i in range(5):
                await producer.send(lane, b"[%d]" % i, key=b"array-%d" % i)
            bad = json.dumps(chat_job("bad-kind", kind="image")).encode()
            await producer.send(lane, bad, key=b"bad-kind")
            await producer.flush()
        finally:
            await producer.stop()
        letters = await dead_letters(settings, 6)

    def select(**kwargs: Any) -> list[str]:
        chosen = dlq.Selection.parse(
            kwargs.get("since"), kwargs.get("limit"), kwargs.get("pattern")
        )
        return [(letter.key or b"").decode() for letter in letters if chosen.matches(letter)]

    assert select(pattern="invalid_request") == ["bad-kind"]
    assert select(pattern="ARRAY-[34]") == ["array-3", "array-4"]  # keys, case-insensitive
    assert select(since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert len(select(since=datetime.now(UTC) - timedelta(hours=1))) == 6
    with pytest.raises(ValueError, match="--filter"):
        dlq.Selection.parse(None, None, "([")
    limited = [x async for x in dlq.read(settings, dlq.Selection(limit=2))]
    assert len(limited) == 2

    env = {
        **os.environ,
        "HEADWAY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "HEADWAY_TOPIC_PREFIX": settings.topic_prefix,
    }
    listed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "workers", "dlq", "list", "--json", "--filter", "kind"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr.decode()[-2000:]
    lines = [json.loads(line) for line in listed.stdout.decode().splitlines()]
    assert [line["key"] for line in lines] == ["bad-kind"]
    assert lines[0]["source_topic"] == lane
    assert json.loads(lines[0]["value"]["text"])["kind"] == "image"
    dry = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "workers", "dlq", "replay", "--dry-run", "--limit", "3"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr.decode()[-2000:]
    assert b"would replay 3 dead letters" in dry.stdout


async def test_a_forged_replay_header_does_not_run_a_failed_job_again(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(database_url=sqlite_url, job_partitions=1)
    config = development_config(simulator.base_url)
    break_execution_for({"poison-1", "poison-2"}, monkeypatch)
    jobs = [chat_job("poison-1"), chat_job("poison-2")]
    lane = settings.topics.jobs(Priority.NORMAL)
    async with running_worker(settings, config) as worker:
        async with HeadwayClient(settings) as client:
            await client.submit_many(jobs)
        letters = await dead_letters(settings, 2)
        monkeypatch.undo()  # even after the fix, only an operator's replay runs it again
        other = next(letter for letter in letters if letter.key == b"poison-1")
        value = json.dumps(chat_job("poison-2")).encode()
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            for named in (b"0:999", f"{other.partition}:{other.offset}".encode(), b"x:y"):
                await producer.send_and_wait(
                    lane, value, key=b"poison-2", headers=[(HEADER_REPLAY, named)]
                )
        finally:
            await producer.stop()
        results = await _results_until(settings, "poison-2", copies=4)
        assert worker.pipeline.replays is not None
        forged = worker.pipeline.replays.forged
    assert [r["status"] for r in results] == ["failed"] * 4  # the stored result, re-published
    assert simulator.stats.jobs["poison-2"] == 0
    assert forged == 2  # the third named no dead letter at all
