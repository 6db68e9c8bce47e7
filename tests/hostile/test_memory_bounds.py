"""A record is bounded in bytes (1 MiB), but what it holds once parsed depends on its shape: a
job of 24,000 tiny messages is 0.7 MB on the wire and ~12 MB parsed, and 60 of them took a
worker from 90 MB to 940 MB. So intake bounds the counts that make parsed jobs large (naming the
field and the limit), and the lane buffers count what a parsed job holds, not its record's
bytes: a worker's memory is bounded by its buffers whatever its jobs' shapes (issue 33, item 7)."""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from broker.config import development_config
from broker.settings import Settings
from schemas.jobs import Priority
from tests.helpers import chat_job, embedding_job, read_topic, running_worker
from tests.hostile.test_schemas import produce
from tests.unit.test_spill import PausingConsumer, fetcher_over, normal_partition
from workers.devstack.simulator import SimulatorServer
from workers.intake import parsing
from workers.intake.parsing import InvalidJob, parse_job
from workers.intake.scheduler import LaneScheduler

MAX_BYTES = 1024 * 1024
TINY = {"role": "user", "content": "x"}
JOBS_MEASURED = 4


def tool(i: int) -> dict[str, Any]:
    return {"type": "function", "function": {"name": f"t{i}", "parameters": {"type": "object"}}}


def call(i: int) -> dict[str, Any]:
    return {"id": f"c{i}", "type": "function", "function": {"name": "t", "arguments": "{}"}}


def text_parts(n: int) -> list[dict[str, Any]]:
    return [{"type": "text", "text": "x"}] * n


@pytest.mark.parametrize(
    ("job", "named"),
    [
        (
            chat_job("j", messages=[TINY] * 2049),
            "messages: List should have at most 2048 items after validation, not 2049",
        ),
        (
            chat_job("j", messages=[{"role": "user", "content": text_parts(500)}] * 5),
            "messages: 2,500 content parts in all; the limit is 2,048",
        ),
        (
            chat_job("j", messages=[{"role": "user", "content": text_parts(501)}]),
            "messages.0.content.list[tagged-union[TextPart,ImagePart,FilePart]]: List should have "
            "at most 500 items after validation, not 501",
        ),
        (
            chat_job("j", params={"tools": [tool(i) for i in range(129)]}),
            "params.tools: List should have at most 128 items after validation, not 129",
        ),
        (
            chat_job(
                "j",
                messages=[TINY, {"role": "assistant", "tool_calls": [call(i) for i in range(129)]}],
            ),
            "messages.1.tool_calls: List should have at most 128 items after validation",
        ),
        (
            chat_job(
                "j", messages=[TINY, *[{"role": "assistant", "tool_calls": [call(1)] * 100}] * 21]
            ),
            "messages: 2,100 tool calls in all; the limit is 2,048",
        ),
        (
            embedding_job("j", input=["x"] * 2049),
            "input.list[str]: List should have at most 2048 items after validation, not 2049",
        ),
        (
            chat_job("j", params={"logit_bias": {str(i): 1 for i in range(1025)}}),
            "params.logit_bias: Dictionary should have at most 1024 items after validation",
        ),
        (
            chat_job(
                "j",
                messages=None,
                template={"name": "t", "variables": {f"v{i}": "x" for i in range(257)}},
            ),
            "template.variables: Dictionary should have at most 256 items after validation",
        ),
        (
            chat_job("j", params={"prediction": {"type": "content", "content": [0] * 70_000}}),
            "the job holds more than 65,536 JSON values; the limit",
        ),
        (  # admitted, it could never be published back: pydantic stops near 255 levels
            chat_job("j", metadata={"a": json.loads("[" * 300 + "]" * 300)}),
            "the job nests deeper than 100 levels; the limit",
        ),
    ],
)
def test_what_makes_a_parsed_job_large_is_bounded_at_intake_naming_field_and_limit(
    job: dict[str, Any], named: str
) -> None:
    intake = parse_job(
        json.dumps({k: v for k, v in job.items() if v is not None}).encode(), MAX_BYTES
    )
    assert isinstance(intake, InvalidJob), intake
    assert named in intake.reason, intake.reason


#: the shapes that hold the most per record byte, each as large as a record or its limits allow
SHAPES = {
    "24,000 tiny messages": chat_job("j", messages=[TINY] * 24_000),
    "2,048 tiny messages": chat_job("j", messages=[TINY] * 2048),
    "2,048 parts in 5 messages": chat_job(
        "j", messages=[{"role": "user", "content": text_parts(400)}] * 5 + [TINY]
    ),
    "2,048 tool calls in 512 messages": chat_job(
        "j",
        messages=[TINY, *[{"role": "assistant", "tool_calls": [call(i) for i in range(4)]}] * 512],
    ),
    "one emoji in 500,000 letters": chat_job(
        "j", messages=[{"role": "user", "content": "😀" + "a" * 500_000}]
    ),
    "65,000 empty lists": chat_job("j", params={"web_search_options": {"x": [[]] * 65_000}}),
    "65,000 empty objects": chat_job("j", params={"web_search_options": {"x": [{}] * 65_000}}),
    "65,000 numbers": chat_job("j", params={"prediction": {"x": [1.5] * 65_000}}),
    "65,000 short strings": chat_job("j", params={"prediction": {"x": ["ab"] * 65_000}}),
    "128 tools": chat_job("j", params={"tools": [tool(i) for i in range(128)]}),
    "a 20,000-value schema": chat_job(
        "j",
        params={
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": {"enum": list(range(19_990))}},
            }
        },
    ),
}


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_lane_counts_at_least_what_its_parsed_job_holds(shape: str) -> None:
    value = json.dumps(SHAPES[shape], separators=(",", ":")).encode()
    assert len(value) <= MAX_BYTES
    scheduler = LaneScheduler(4096, 64 * MAX_BYTES)
    fetcher = fetcher_over(None, scheduler, PausingConsumer(normal_partition()))
    tp = normal_partition()

    def record(offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
        return ConsumerRecord(tp.topic, 0, offset, 0, 0, None, value, None, -1, len(value), [])

    # what the first parse of a shape leaves behind for good (caches; the thread a large
    # record is parsed in) is not the job's: the same record once before, counted in `before`
    await fetcher._take({tp: [record(0, value)]})
    _, before = scheduler._lanes[Priority.NORMAL].load
    gc.collect()
    tracemalloc.start()
    await fetcher._take({tp: [record(offset, value) for offset in range(1, 1 + JOBS_MEASURED)]})
    # the parse thread keeps its last task's leftovers until its next task: give it one
    await asyncio.get_running_loop().run_in_executor(parsing._PARSER, int)
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    _, after = scheduler._lanes[Priority.NORMAL].load
    counted, holds = after - before, held + JOBS_MEASURED * len(value)
    assert holds <= counted, f"{shape}: holds {holds:,} bytes, counted {counted:,}"


async def test_jobs_past_the_counts_are_rejected_over_a_real_broker_and_their_neighbours_run(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url, job_partitions=1)
    large = [chat_job(f"large-{i}", messages=[TINY] * 24_000) for i in range(6)]
    long = chat_job("long", messages=[TINY] * 2100)
    async with running_worker(settings, development_config(simulator.base_url)):
        await produce(settings, [*large, long, chat_job("neighbour")])
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=len(large) + 2
        )
    assert results.by_key["neighbour"][0]["status"] == "succeeded"
    for job in large:
        [result] = results.by_key[job["job_id"]]
        assert result["status"] == "rejected" and result["error"]["code"] == "invalid_request"
        assert result["error"]["message"] == "the job holds more than 65,536 JSON values; the limit"
    [result] = results.by_key["long"]
    assert result["status"] == "rejected" and result["error"]["code"] == "invalid_request"
    assert result["error"]["message"] == (
        "messages: List should have at most 2048 items after validation, not 2100"
    )
