"""The simulator is a real HTTP server speaking the OpenAI wire format, with knobs."""

from __future__ import annotations

import httpx

from workers.devstack.simulator import SimulatorConfig, SimulatorServer


async def test_chat_completions_are_deterministic_with_realistic_usage(
    simulator: SimulatorServer,
) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "The quick brown fox jumps."}],
        "max_tokens": 50,
    }
    async with httpx.AsyncClient() as client:
        first = (await client.post(f"{simulator.base_url}/chat/completions", json=body)).json()
        second = (await client.post(f"{simulator.base_url}/chat/completions", json=body)).json()
    assert first["object"] == "chat.completion"
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]
    assert first["choices"][0]["finish_reason"] == "stop"
    usage = first["usage"]
    assert usage["prompt_tokens"] > 4 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_max_tokens_truncates_with_finish_reason_length(simulator: SimulatorServer) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "word " * 100}], "max_tokens": 5}
    async with httpx.AsyncClient() as client:
        reply = (await client.post(f"{simulator.base_url}/chat/completions", json=body)).json()
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] <= 5


async def test_embeddings_have_the_requested_dimensions_in_order(
    simulator: SimulatorServer,
) -> None:
    body = {"model": "e", "input": ["a", "b", "c"], "dimensions": 4}
    async with httpx.AsyncClient() as client:
        reply = (await client.post(f"{simulator.base_url}/embeddings", json=body)).json()
    assert [d["index"] for d in reply["data"]] == [0, 1, 2]
    assert all(len(d["embedding"]) == 4 for d in reply["data"])
    assert reply["usage"]["prompt_tokens"] == 3


async def test_an_rpm_limit_answers_429_with_retry_after() -> None:
    async with SimulatorServer(SimulatorConfig(rpm=3)) as sim, httpx.AsyncClient() as client:
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        codes = [
            (await client.post(f"{sim.base_url}/chat/completions", json=body)) for _ in range(5)
        ]
        assert [r.status_code for r in codes] == [200, 200, 200, 429, 429]
        limited = codes[3]
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.json()["error"]["type"] == "rate_limit_exceeded"
        assert sim.stats.rate_limited == 2


async def test_an_error_rate_answers_500s_and_everything_is_counted() -> None:
    async with (
        SimulatorServer(SimulatorConfig(error_rate=1.0)) as sim,
        httpx.AsyncClient() as client,
    ):
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        reply = await client.post(
            f"{sim.base_url}/chat/completions", json=body, headers={"x-headway-job": "j1"}
        )
        assert reply.status_code == 500 and reply.json()["error"]["type"] == "server_error"
        stats = (await client.get(sim.base_url.removesuffix("/v1") + "/_sim/stats")).json()
        assert stats["calls"] == 1 and stats["errors"] == 1 and stats["jobs"] == {"j1": 1}


async def test_settings_change_at_runtime_and_bad_bodies_get_400(
    simulator: SimulatorServer,
) -> None:
    root = simulator.base_url.removesuffix("/v1")
    async with httpx.AsyncClient() as client:
        changed = await client.post(
            f"{root}/_sim/config", json={"error_rate": 0.0, "latency_ms": 1}
        )
        assert changed.json()["latency_ms"] == 1
        unknown = await client.post(f"{root}/_sim/config", json={"colour": "red"})
        assert unknown.status_code == 400
        bad = await client.post(f"{simulator.base_url}/chat/completions", content=b"{nope")
        assert bad.status_code == 400
        no_model = await client.post(f"{simulator.base_url}/embeddings", json={"input": "x"})
        assert no_model.status_code == 400


async def test_a_request_can_ask_for_a_slow_answer(simulator: SimulatorServer) -> None:
    import time

    body = {"model": "m", "messages": [{"role": "user", "content": "sim:latency_ms=300 hello"}]}
    async with httpx.AsyncClient() as client:
        started = time.monotonic()
        await client.post(f"{simulator.base_url}/chat/completions", json=body)
    assert time.monotonic() - started >= 0.3
