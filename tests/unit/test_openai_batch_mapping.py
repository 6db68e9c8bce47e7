"""OpenAI Batch files both ways, field by field: every chat-completions and embeddings body
field becomes a job field or a parameter (or is refused on its line with the reason), and the
output lines have OpenAI's shapes — tool calls with a null content, n choices, logprobs, the
system fingerprint, embeddings in base64 when asked."""

from __future__ import annotations

import base64
import itertools
import json
import struct
from typing import Any

import pytest

from workers.cli.exports import openai_batch_line
from workers.cli.submission import Overrides, parse_lines

_IDS = itertools.count()


def line(url: str, **body: Any) -> str:
    """An OpenAI Batch line with a custom_id of its own (a file's ids are distinct)."""
    custom_id = f"c{next(_IDS)}"
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


def test_the_five_lines_of_issue_23_all_become_jobs() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    lines = [
        line(CHAT, model="m", messages=[{"role": "developer", "content": "x"}, *USER],
             max_completion_tokens=50),
        line(CHAT, model="m", messages=[{"role": "user", "content": [
            {"type": "text", "text": "what?"}, image]}]),
        line(CHAT, model="m", messages=USER, response_format=schema),
        line(CHAT, model="m", messages=USER, tools=[tool]),
        line("/v1/embeddings", model="e", input="x", encoding_format="float"),
    ]  # fmt: skip

    parsed = parse_lines(lines, Overrides(tenant="acme"))

    assert parsed.errors == [] and len(parsed.jobs) == 5
    assert parsed.jobs[0].params is not None and parsed.jobs[0].params.output_limit == 50


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (line("/v1/responses", model="m", input="x"), "the Responses API is not supported"),
        (line(CHAT, model="m", messages=USER, stream=True), "body.stream: a batch job is not"),
        (line(CHAT, model="m", messages=USER, functions=[]), "body.functions: deprecated"),
        (line(CHAT, model="m", messages=USER, audio={}), "body.audio: audio output"),
        (line(CHAT, model="m", messages=USER, colour=1), "body.colour: not a field of"),
        (line(CHAT, model="m", messages=USER, dimensions=8), "body.dimensions: not a field"),
        (line("/v1/embeddings", model="e", input="x", tools=[]), "body.tools: not a field"),
    ],
)
def test_a_field_headway_cannot_take_is_refused_on_its_line_with_the_reason(
    text: str, reason: str
) -> None:
    parsed = parse_lines([text], Overrides(tenant="acme"))

    assert parsed.jobs == [] and len(parsed.errors) == 1
    assert parsed.errors[0].startswith("line 1: ") and reason in parsed.errors[0]


def test_stream_false_and_every_openai_parameter_are_taken() -> None:
    text = line(
        CHAT, model="m", messages=USER, stream=False, n=2, logprobs=True, top_logprobs=3,
        logit_bias={"1": 5}, user="u", metadata={"k": "v"}, store=True, service_tier="auto",
        reasoning_effort="low", seed=1, presence_penalty=0.1, frequency_penalty=0.2,
        prediction={"type": "content", "content": "x"}, verbosity="low", modalities=["text"],
        web_search_options={}, safety_identifier="s", prompt_cache_key="p",
    )  # fmt: skip

    parsed = parse_lines([text], Overrides(tenant="acme"))

    assert parsed.errors == []
    params = parsed.jobs[0].params
    assert params is not None and params.n == 2 and params.metadata == {"k": "v"}


def result(output: dict[str, Any], kind: str = "chat") -> str:
    return json.dumps(
        {
            "job_id": "j",
            "tenant": "t",
            "kind": kind,
            "status": "succeeded",
            "deployment": "gpt-4o",
            "output": output,
            "usage": {"input_tokens": 3, "output_tokens": 2},
            "completed_at": "2026-12-01T00:00:00Z",
        }
    )


def test_a_tool_call_answer_has_a_null_content_and_openais_tool_calls() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    out = openai_batch_line(
        result({"text": "", "finish_reason": "tool_calls", "tool_calls": [call]})
    )

    choice = out["response"]["body"]["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [call],
    }
    assert choice["finish_reason"] == "tool_calls"


def test_n_answers_are_n_choices_with_logprobs_and_the_fingerprint() -> None:
    logprobs = {"content": [{"token": "a", "logprob": -0.1}], "refusal": None}
    answers = [
        {"index": i, "text": f"a{i}", "finish_reason": "stop", "logprobs": logprobs}
        for i in range(3)
    ]
    output = {"text": "a0", "finish_reason": "stop", "choices": answers}
    out = openai_batch_line(result({**output, "system_fingerprint": "fp_1"}))

    body = out["response"]["body"]
    assert [c["message"]["content"] for c in body["choices"]] == ["a0", "a1", "a2"]
    assert body["choices"][2]["logprobs"] == logprobs and body["system_fingerprint"] == "fp_1"


def test_embeddings_asked_for_in_base64_are_little_endian_float32() -> None:
    vector = [0.5, -0.25, 1.0]
    out = openai_batch_line(
        result({"embeddings": [vector], "encoding_format": "base64"}, kind="embedding")
    )

    encoded = out["response"]["body"]["data"][0]["embedding"]
    assert list(struct.unpack("<3f", base64.b64decode(encoded))) == vector
