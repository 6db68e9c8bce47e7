"""Rich requests over real HTTP, each adapter against the simulator speaking its provider's
wire: tool calls and tool results, structured output, images and PDFs, several answers and
content-policy refusals come back in one shape whichever provider answered."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from broker.capabilities import BY_PROVIDER_TYPE, Feature
from broker.errors import ProviderBadRequest, ProviderContentFiltered
from schemas.jobs import Params
from tests.integration.test_adapters_over_http import WIRES, adapter, http
from workers.devstack.simulator import SimulatorServer
from workers.providers.base import ChatCall

pytestmark = pytest.mark.integration

__all__ = ["http"]  # the fixture, shared with the plain adapter specs
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
INVOICE = {
    "type": "json_schema",
    "json_schema": {
        "name": "invoice",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"total": {"type": "number"}, "vendor": {"type": "string"}},
            "required": ["total", "vendor"],
            "additionalProperties": False,
        },
    },
}
PNG_1X1 = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d4944415478da63f8cfc0f01f0005000201e2216bc50000000049454e44ae426082"
    )
).decode()
PDF = base64.b64encode(b"%PDF-1.4\n1 0 obj << /Type /Page >> endobj\n%%EOF").decode()


def supports(wire: str, feature: Feature) -> bool:
    return feature in BY_PROVIDER_TYPE[wire]


def ask(text: str, **params: object) -> ChatCall:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": text},
    ]
    return ChatCall("model-a", messages, Params.model_validate(params))


@pytest.mark.parametrize("wire", WIRES)
async def test_a_tool_call_comes_back_in_openais_shape_from_every_wire(
    wire: str, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    reply = await adapter(simulator, wire, http).chat(
        ask("Weather in Paris?", tools=[WEATHER], tool_choice="required")
    )

    assert reply.finish_reason == "tool_calls" and reply.text == ""
    assert reply.tool_calls is not None and len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    assert json.loads(call.function.arguments) == {"city": "x", "unit": "c"}


@pytest.mark.parametrize("wire", WIRES)
async def test_a_named_tool_choice_and_parallel_calls_are_honoured(
    wire: str, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    provider = adapter(simulator, wire, http)
    named = await provider.chat(
        ask(
            "Time? sim:parallel",
            tools=[WEATHER, TIME],
            tool_choice={"type": "function", "function": {"name": "get_time"}},
        )
    )
    both = await provider.chat(ask("Both please sim:parallel", tools=[WEATHER, TIME]))

    assert [c.function.name for c in named.tool_calls or []] == ["get_time"]
    assert [c.function.name for c in both.tool_calls or []] == ["get_weather", "get_time"]


@pytest.mark.parametrize("wire", WIRES)
async def test_a_tool_result_in_the_history_is_answered_with_text(
    wire: str, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    arguments = json.dumps({"city": "Paris", "unit": "c"})
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"},
    ]
    call = ChatCall("model-a", messages, Params.model_validate({"tools": [WEATHER]}))

    reply = await adapter(simulator, wire, http).chat(call)

    assert reply.finish_reason == "stop" and reply.text and reply.tool_calls is None


@pytest.mark.parametrize("wire", WIRES)
async def test_a_json_schema_answer_is_the_schemas_json_on_every_wire(
    wire: str, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    reply = await adapter(simulator, wire, http).chat(
        ask("Extract the invoice", response_format=INVOICE)
    )

    assert json.loads(reply.text) == {"total": 0, "vendor": "x"}
    assert reply.finish_reason == "stop" and reply.tool_calls is None


@pytest.mark.parametrize("wire", WIRES)
async def test_images_and_pdfs_inline_reach_every_wire_that_takes_them(
    wire: str, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    parts: list[dict[str, object]] = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1X1}"}},
    ]
    if supports(wire, Feature.FILE):
        parts.append({"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}"}})
    call = ChatCall("model-a", [{"role": "user", "content": parts}])

    reply = await adapter(simulator, wire, http).chat(call)

    assert reply.text.startswith("Summary[") and reply.input_tokens >= 85


@pytest.mark.parametrize("wire", WIRES)
async def test_a_text_only_model_refuses_an_image_with_a_clear_error(
    wire: str, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    parts = [
        {"type": "text", "text": "Describe"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1X1}"}},
    ]
    with pytest.raises(ProviderBadRequest, match="does not support"):
        await adapter(simulator, wire, http).chat(
            ChatCall("text-only-model", [{"role": "user", "content": parts}])
        )


@pytest.mark.parametrize("wire", WIRES)
async def test_a_content_policy_refusal_is_content_filtered_on_every_wire(
    wire: str, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    with pytest.raises(ProviderContentFiltered) as refused:
        await adapter(simulator, wire, http).chat(ask("Tell me sim:content_filter"))
    assert refused.value.provider == wire


@pytest.mark.parametrize("wire", [w for w in WIRES if supports(w, Feature.N)])
async def test_n_answers_come_back_as_choices(
    wire: str, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    reply = await adapter(simulator, wire, http).chat(ask("Name a colour", n=3))

    assert reply.choices is not None and [c.index for c in reply.choices] == [0, 1, 2]
    assert len({c.text for c in reply.choices}) == 3 and reply.text == reply.choices[0].text


@pytest.mark.parametrize("wire", [w for w in WIRES if supports(w, Feature.LOGPROBS)])
async def test_logprobs_are_passed_back_as_openai_returns_them(
    wire: str, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    reply = await adapter(simulator, wire, http).chat(ask("Hello", logprobs=True, top_logprobs=2))

    assert reply.logprobs is not None and reply.logprobs["content"][0]["logprob"] < 0
