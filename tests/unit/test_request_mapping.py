"""Each adapter maps a rich OpenAI-shaped call to its provider's documented request body.

Each file under ``tests/fixtures/requests/`` holds a call (messages and parameters as a job
carries them), the body the adapter must send, and the documentation it follows: developer
messages into the system prompt, images and PDFs into the provider's blocks, an assistant's
tool calls and the tool's answer into the provider's tool turns, tools and tool_choice,
structured output (a forced tool on Anthropic, a response schema on Gemini)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from schemas.jobs import Params
from workers.providers import anthropic, gemini, openai
from workers.providers.base import ChatCall

REQUESTS = Path(__file__).parents[1] / "fixtures" / "requests"
CASES = sorted(REQUESTS.glob("*.json"))
BODY: dict[str, Callable[[ChatCall], dict[str, Any]]] = {
    "openai": lambda call: openai.chat_body(call, model=call.model),
    "anthropic": anthropic.messages_body,
    "gemini": gemini.generate_body,
}


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_the_adapter_sends_the_documented_body(path: Path) -> None:
    recorded = json.loads(path.read_text())
    call = recorded["call"]
    wire = path.stem.split("_")[0]

    body = BODY[wire](ChatCall("model-x", call["messages"], Params.model_validate(call["params"])))

    assert body == recorded["body"], recorded["source"]


def test_every_wire_has_a_recorded_rich_request() -> None:
    assert {p.stem.split("_")[0] for p in CASES} == set(BODY)


def test_a_json_answer_with_tools_is_refused_on_anthropic_rather_than_dropping_either() -> None:
    params = Params.model_validate(
        {
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "response_format": {"type": "json_object"},
        }
    )
    with pytest.raises(Exception, match="tools together with a JSON response_format"):
        anthropic.messages_body(ChatCall("m", [{"role": "user", "content": "x"}], params))


def test_anthropic_reads_the_forced_tools_input_as_the_answers_text() -> None:
    reply = {
        "content": [{"type": "tool_use", "id": "t", "name": "respond", "input": {"total": 3}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 5, "output_tokens": 2},
    }

    answer = anthropic.read_message(reply, forced=True)

    assert json.loads(answer.text) == {"total": 3}
    assert answer.finish_reason == "stop" and answer.tool_calls is None


def test_a_structured_answer_without_its_forced_tool_is_a_broken_answer_not_a_crash() -> None:
    from broker.errors import ProviderResponseError
    from workers.providers.base import transport_errors

    reply = {
        "content": [{"type": "text", "text": "I'd rather chat."}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": 2},
    }

    broken = pytest.raises(ProviderResponseError, match="no 'respond' tool_use block")
    with broken, transport_errors("anthropic"):
        anthropic.read_message(reply, forced=True)
