"""One bad item never wedges its provider-batch submission (issue 33 §12).

An item whose answer cannot be read (garbled, or its message missing), or whose check fails
on headway's side, used to make the whole submission's settling raise: the submission was
polled again every 5 minutes for ever, the jobs already settled were re-published on every
poll, and the others waited for the deadline sweep. Now each item ends alone — the bad one
``failed`` with an error saying what was wrong with its answer, the others settled as usual —
and the submission is marked ended once every item is settled; nothing is published twice.
Over the real broker, HTTP to the simulator's batch APIs and a real ledger; the providers'
result files are also read line by line on a loopback transport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from broker.client import HeadwayClient
from broker.config import ProviderConfig, ProviderType
from broker.errors import LedgerUnavailable, ProviderContentFiltered, ProviderResponseError
from broker.settings import Settings
from tests.helpers import eventually, read_topic, running_worker
from tests.integration.test_batch_lane import lane_config, lane_settings, tolerant
from workers.batch_lane import settling as lane_module
from workers.devstack.simulator import SimulatorConfig, SimulatorServer
from workers.ledger.database.engine import create_engine
from workers.ledger.database.models import BatchItemRow, ProviderBatchRow
from workers.providers.base import ChatCall
from workers.providers.batch_apis import AnthropicBatches, OpenAIBatches
from workers.settle.settlement import Settlement

JOBS = 6


async def lane_rows(url: str) -> tuple[list[str], list[str]]:
    """The statuses of the provider batches and of the batch items in the ledger."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            batches = list(await conn.scalars(select(ProviderBatchRow.status)))
            items = list(await conn.scalars(select(BatchItemRow.status)))
    finally:
        await engine.dispose()
    return batches, items


async def all_results(settings: Settings, count: int) -> dict[str, list[dict[str, Any]]]:
    found = await read_topic(
        settings.kafka_bootstrap or "", settings.topics.results, until_keys=count, timeout_s=30
    )
    return found.by_key


@pytest.mark.parametrize("wire", ["simulator", "anthropic"])
async def test_an_unreadable_batch_answer_fails_its_job_alone_and_the_submission_ends(
    wire: str, make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    jobs = [tolerant(f"ok-{i}", f"Summarise note {i}.") for i in range(JOBS - 1)]
    jobs.append(tolerant("garbled", "Summarise this. sim:batch_garbled"))
    async with SimulatorServer(SimulatorConfig(seed=21, batch_delay_s=0.3)) as sim:
        settings = lane_settings(make_settings, sqlite_url)
        async with running_worker(settings, lane_config(sim, wire)) as worker:
            async with HeadwayClient(settings) as client:
                await client.submit_many(jobs)
            results = await all_results(settings, JOBS)
            lane = worker.pipeline.batch_lane
            assert lane is not None
            assert await eventually(lambda: lane.submissions == 1)
            await asyncio.sleep(1.5)  # five more polls: time for any re-publication
            again = await all_results(settings, JOBS)
            batches, items = await lane_rows(sqlite_url)
    assert sorted(results) == sorted(job["job_id"] for job in jobs)
    assert all(len(copies) == 1 for copies in again.values()), "nothing published twice"
    assert {again[f"ok-{i}"][0]["status"] for i in range(JOBS - 1)} == {"succeeded"}
    bad = again["garbled"][0]
    assert bad["status"] == "failed" and bad["error"]["code"] == "provider_error"
    assert "unreadable" in bad["error"]["message"]
    assert batches == ["ended"] and items == ["done"] * JOBS
    assert sim.stats.batches == 1 and sim.stats.chat_calls == 0


async def test_an_item_whose_check_fails_on_headways_side_ends_alone(
    make_settings: Callable[..., Settings], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = lane_module.execution_of

    async def failing_check(deployment: Any, outcome: Any, job: Any) -> Any:
        if job.job_id == "unlucky":
            raise RecursionError("maximum recursion depth exceeded (a check that broke)")
        return await original(deployment, outcome, job)

    monkeypatch.setattr(lane_module, "execution_of", failing_check)
    jobs = [tolerant(f"ok-{i}", f"Summarise note {i}.") for i in range(JOBS - 1)]
    jobs.append(tolerant("unlucky", "Summarise this too."))
    async with SimulatorServer(SimulatorConfig(seed=22, batch_delay_s=0.3)) as sim:
        settings = lane_settings(make_settings, sqlite_url)
        async with running_worker(settings, lane_config(sim)):
            async with HeadwayClient(settings) as client:
                await client.submit_many(jobs)
            await all_results(settings, JOBS)
            await asyncio.sleep(1.5)
            again = await all_results(settings, JOBS)
            batches, items = await lane_rows(sqlite_url)
    assert all(len(copies) == 1 for copies in again.values()), "nothing published twice"
    assert {again[f"ok-{i}"][0]["status"] for i in range(JOBS - 1)} == {"succeeded"}
    bad = again["unlucky"][0]
    assert bad["status"] == "failed" and bad["error"]["code"] == "internal_error"
    assert "RecursionError" in bad["error"]["message"]
    assert "recursion depth" not in bad["error"]["message"]  # the type, never the text
    assert batches == ["ended"] and items == ["done"] * JOBS


async def test_a_look_that_fails_part_way_is_made_again_soon_and_publishes_nothing_twice(
    make_settings: Callable[..., Settings], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger fails while one item is stored: the items already stored are done, the
    submission is looked at again at the next poll (not after the 5-minute lease), and only
    the item left is settled then."""
    original = Settlement.finish
    failed: list[str] = []

    async def flaky_finish(self: Settlement, result: Any, *args: Any, **kwargs: Any) -> Any:
        if result.job_id == "flaky" and not failed:
            failed.append(result.job_id)
            raise LedgerUnavailable("the database went away for a moment")
        return await original(self, result, *args, **kwargs)

    monkeypatch.setattr(Settlement, "finish", flaky_finish)
    jobs = [tolerant(f"ok-{i}", f"Summarise note {i}.") for i in range(JOBS - 1)]
    jobs.append(tolerant("flaky", "Summarise this as well."))
    async with SimulatorServer(SimulatorConfig(seed=23, batch_delay_s=0.3)) as sim:
        settings = lane_settings(make_settings, sqlite_url)
        async with running_worker(settings, lane_config(sim)):
            async with HeadwayClient(settings) as client:
                await client.submit_many(jobs)
            await all_results(settings, JOBS)
            await asyncio.sleep(1.5)
            again = await all_results(settings, JOBS)
            batches, items = await lane_rows(sqlite_url)
    assert failed == ["flaky"]
    assert all(len(copies) == 1 for copies in again.values()), "nothing published twice"
    assert {copies[0]["status"] for copies in again.values()} == {"succeeded"}
    assert batches == ["ended"] and items == ["done"] * JOBS
    assert sim.stats.batches == 1 and sim.stats.batch_items == JOBS


async def test_a_submission_the_provider_no_longer_knows_ends_and_its_jobs_run_online(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    jobs = [tolerant(f"ok-{i}", f"Summarise note {i}.") for i in range(3)]
    async with SimulatorServer(SimulatorConfig(seed=24, batch_delay_s=60.0)) as sim:
        settings = lane_settings(make_settings, sqlite_url)
        async with running_worker(settings, lane_config(sim)) as worker:
            lane = worker.pipeline.batch_lane
            assert lane is not None
            async with HeadwayClient(settings) as client:
                await client.submit_many(jobs)
            assert await eventually(lambda: lane.submissions == 1)
            sim.batch_apis.openai.clear()  # the provider forgot it: 404 on every look
            results = await all_results(settings, len(jobs))
            batches, items = await lane_rows(sqlite_url)
    assert {copies[0]["status"] for copies in results.values()} == {"succeeded"}
    assert all(len(copies) == 1 for copies in results.values())
    assert sim.stats.chat_calls == len(jobs)  # online, at the online price
    assert batches == ["ended"] and items == ["done"] * len(jobs)


# -- the result files, read line by line (loopback transport) -----------------------------------

CALL = ChatCall(model="m", messages=[{"role": "user", "content": "hi"}], params=None)
FINE = {"role": "assistant", "content": "fine"}
GOOD_BODY = {
    "choices": [{"index": 0, "message": FINE, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
}


def openai_over(lines: list[bytes]) -> OpenAIBatches:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/batches/b1"):
            return httpx.Response(200, json={"id": "b1", "output_file_id": "f1"})
        return httpx.Response(200, content=b"\n".join(lines))

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    config = ProviderConfig(type=ProviderType.OPENAI, base_url="http://provider.invalid/v1")
    return OpenAIBatches("p", config, client, None)


def line(custom_id: Any, body: Any, status: Any = 200) -> bytes:
    response = {"status_code": status, "body": body}
    return json.dumps({"custom_id": custom_id, "response": response}).encode()


async def test_each_line_of_an_openai_result_file_is_read_on_its_own() -> None:
    calls = {cid: CALL for cid in ("good", "garbled", "no-body", "odd-status", "filtered", "lost")}
    filtered = {
        "choices": [{"index": 0, "message": {"content": ""}, "finish_reason": "content_filter"}]
    }
    api = openai_over(
        [
            line("good", GOOD_BODY),
            b"{not json",
            b'["a list"]',
            json.dumps({"response": {"status_code": 200}}).encode(),  # no custom_id
            line(["unhashable"], GOOD_BODY),
            line("garbled", {"choices": "garbled"}),
            line("no-body", None),
            line("odd-status", GOOD_BODY, status="two hundred"),
            line("filtered", filtered),
        ]
    )
    outcomes = {o.custom_id: o for o in await api.results("b1", calls)}
    assert outcomes["good"].reply is not None and outcomes["good"].reply.text == "fine"
    for unreadable in ("garbled", "no-body", "odd-status"):
        assert isinstance(outcomes[unreadable].error, ProviderResponseError), unreadable
        assert "unreadable" in str(outcomes[unreadable].error)
    assert isinstance(outcomes["filtered"].error, ProviderContentFiltered)
    assert outcomes["lost"].expired  # no line at all: not run, it goes back online


async def test_an_anthropic_result_without_its_message_is_an_unreadable_answer() -> None:
    results = [
        {"custom_id": "good", "result": {"type": "succeeded", "message": {
            "content": [{"type": "text", "text": "fine"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 1}}}},
        {"custom_id": "missing", "result": {"type": "succeeded"}},
        {"custom_id": "odd", "result": "not an object"},
    ]  # fmt: skip

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/results"):
            return httpx.Response(200, text="\n".join(json.dumps(r) for r in results) + "\n{")
        return httpx.Response(200, json={"id": "b1", "processing_status": "ended"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    config = ProviderConfig(type=ProviderType.ANTHROPIC, base_url="http://provider.invalid")
    api = AnthropicBatches("p", config, client, None)
    outcomes = {
        o.custom_id: o
        for o in await api.results("b1", dict.fromkeys(("good", "missing", "odd"), CALL))
    }
    assert outcomes["good"].reply is not None
    assert isinstance(outcomes["missing"].error, ProviderResponseError)
    assert isinstance(outcomes["odd"].error, ProviderResponseError)
