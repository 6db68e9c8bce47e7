"""The simulator's batch APIs over real HTTP, shaped like the providers': OpenAI files and
batches (output and error files), Anthropic message batches (results JSONL)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from workers.devstack.simulator import SimulatorConfig, SimulatorServer


def chat_line(custom_id: str, text: str) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    )


async def poll(http: httpx.AsyncClient, url: str, done: set[str], key: str) -> dict[str, Any]:
    for _ in range(100):
        view: dict[str, Any] = (await http.get(url)).json()
        if view[key] in done:
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never reached {done}")


async def test_an_openai_batch_completes_with_output_and_error_files() -> None:
    async with (
        SimulatorServer(SimulatorConfig(batch_delay_s=0.1)) as sim,
        httpx.AsyncClient(base_url=sim.base_url) as http,
    ):
        lines = [chat_line(f"r-{i}", f"text {i}") for i in range(5)]
        lines += [chat_line("bad", "sim:reject"), chat_line("late", "sim:batch_expire")]
        uploaded = await http.post(
            "/files",
            data={"purpose": "batch"},
            files={"file": ("in.jsonl", "\n".join(lines).encode(), "application/jsonl")},
        )
        assert uploaded.status_code == 200, uploaded.text
        created = await http.post(
            "/batches",
            json={
                "input_file_id": uploaded.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )
        assert created.json()["status"] == "validating"
        view = await poll(http, f"/batches/{created.json()['id']}", {"completed"}, "status")
        output = (await http.get(f"/files/{view['output_file_id']}/content")).text
        errors = (await http.get(f"/files/{view['error_file_id']}/content")).text
    good = {line["custom_id"]: line for line in map(json.loads, output.splitlines())}
    bad = {line["custom_id"]: line for line in map(json.loads, errors.splitlines())}
    assert sorted(good) == [f"r-{i}" for i in range(5)]
    assert good["r-0"]["response"]["body"]["object"] == "chat.completion"
    assert bad["bad"]["response"]["status_code"] == 400
    assert bad["late"]["response"] is None and bad["late"]["error"]["code"] == "batch_expired"
    assert view["request_counts"] == {"total": 7, "completed": 5, "failed": 2}
    assert sim.stats.batches == 1 and sim.stats.batch_items == 5 and sim.stats.chat_calls == 0


async def test_an_anthropic_message_batch_ends_with_results_per_custom_id() -> None:
    async with SimulatorServer(SimulatorConfig(batch_delay_s=0.1)) as sim:
        headers = {"anthropic-version": "2023-06-01", "x-api-key": "k"}
        async with httpx.AsyncClient(base_url=sim.root_url, headers=headers) as http:

            def item(custom_id: str, text: str) -> dict[str, Any]:
                params = {
                    "model": "c",
                    "max_tokens": 50,
                    "messages": [{"role": "user", "content": text}],
                }
                return {"custom_id": custom_id, "params": params}

            requests = [item("a", "hello"), item("b", "sim:reject"), item("c", "sim:batch_expire")]
            created = await http.post("/v1/messages/batches", json={"requests": requests})
            assert created.json()["processing_status"] == "in_progress"
            url = f"/v1/messages/batches/{created.json()['id']}"
            view = await poll(http, url, {"ended"}, "processing_status")
            results = (await http.get(view["results_url"].removeprefix(sim.root_url))).text
    by_id = {line["custom_id"]: line["result"] for line in map(json.loads, results.splitlines())}
    assert by_id["a"]["type"] == "succeeded" and by_id["a"]["message"]["type"] == "message"
    assert by_id["b"]["type"] == "errored" and by_id["c"]["type"] == "expired"
    assert view["request_counts"]["succeeded"] == 1 and view["request_counts"]["errored"] == 1


async def run_batch(api: Any, calls: dict[str, Any], embeddings: bool = False) -> list[Any]:
    batch_id = await api.submit([api.line(cid, call) for cid, call in calls.items()], embeddings)
    for _ in range(100):
        if (await api.state(batch_id)).ended:
            return list(await api.results(batch_id, calls))
        await asyncio.sleep(0.05)
    raise AssertionError("the batch never ended")


async def test_the_batch_clients_read_each_item_as_the_online_reply_an_error_or_expired() -> None:
    from broker.config import ProviderConfig
    from workers.providers.base import ChatCall, EmbeddingCall
    from workers.providers.batch_apis import AnthropicBatches, OpenAIBatches

    async with (
        SimulatorServer(SimulatorConfig(batch_delay_s=0.1)) as sim,
        httpx.AsyncClient() as http,
    ):
        config = ProviderConfig(type="openai", base_url=sim.base_url)
        openai_api = OpenAIBatches("sim", config, http, "key")

        def chat(text: str) -> ChatCall:
            return ChatCall("m", [{"role": "user", "content": text}])

        chats = {"a": chat("hello"), "b": chat("sim:reject"), "c": chat("sim:batch_expire")}
        outcomes = {o.custom_id: o for o in await run_batch(openai_api, chats)}
        embeds = {"e": EmbeddingCall("emb", ["one", "two"])}
        vectors = await run_batch(openai_api, embeds, embeddings=True)
        anthropic_config = ProviderConfig(type="anthropic", base_url=sim.root_url)
        claude = AnthropicBatches("sim-anthropic", anthropic_config, http, "key")
        messages = {o.custom_id: o for o in await run_batch(claude, chats)}
    assert outcomes["a"].reply is not None and outcomes["a"].reply.text.startswith("Summary[")
    assert outcomes["a"].reply.input_tokens > 0
    assert outcomes["b"].error is not None and not outcomes["b"].error.retryable
    assert outcomes["c"].expired
    assert len(vectors[0].reply.embeddings) == 2
    assert messages["a"].reply is not None and messages["a"].reply.output_tokens > 0
    assert messages["b"].error is not None and messages["c"].expired
    assert sim.stats.batches == 3 and sim.stats.chat_calls == 0
