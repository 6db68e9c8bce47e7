"""Guardrails screen every text the provider receives (issue 33 §11).

A blocked term or an e-mail address in ``prediction``, ``metadata``, ``user``, a message's
``name``, a PDF's ``filename``, an image URL — or in any other string of the request as it is
sent — never reaches the provider. Texts the model reads, and free identifiers, are redacted
where a policy redacts PII; a field that cannot be rewritten without changing what the request
means (an image URL the provider fetches, a tool call id, a tool definition, the schema, a
stop sequence, an object's key) blocks the job instead, naming the field.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from broker.client import HeadwayClient
from broker.config import HeadwayConfig, parse_config
from broker.settings import Settings
from schemas.jobs import JobRequest, Params
from tests.fakes import ScriptedProvider, pipeline_for
from tests.helpers import chat_job, embedding_job, read_topic, running_worker
from workers.content.sent_texts import Use, sent_texts
from workers.devstack.simulator import SimulatorConfig, SimulatorServer
from workers.providers.base import ChatResponse, EmbeddingResponse
from workers.providers.openai import chat_body
from workers.providers.requests import provider_call

TERM = "codeword"
EMAIL = "jane@example.com"
PDF = "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4 << /Type /Page >>").decode()
URL = "https://images.example.net/a.png"


def config(url: str = "http://127.0.0.1:1") -> HeadwayConfig:
    deployment = {"provider": "sim", "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}
    return parse_config(
        {
            "providers": {"sim": {"type": "simulator", "base_url": url}},
            "routes": {
                "summarize": {"kind": "chat", "deployments": [{**deployment, "model": "chat"}]},
                "embed": {"kind": "embedding", "deployments": [{**deployment, "model": "emb"}]},
            },
            "tenants": {"demo": {"guardrails": ["strict"]}},
            "guardrails": {"strict": {"block_terms": [TERM], "redact_pii": ["email"]}},
        }
    )


def conversation(
    *, text: str = "hello", name: str = "ann", call_id: str = "call_1", filename: str = "a.pdf"
) -> list[dict[str, Any]]:
    """Every kind of message: a user's with a name, text, an image by URL and a PDF; an
    assistant's tool call; the tool's answer."""
    return [
        {
            "role": "user",
            "name": name,
            "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": URL, "detail": "low"}},
                {"type": "file", "file": {"file_data": PDF, "filename": filename}},
            ],
        },
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "found"},
    ]


TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Looks things up.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    },
}


def maximal(**changes: Any) -> dict[str, Any]:
    """A chat job setting every chat parameter and carrying every kind of message."""
    params: dict[str, Any] = {
        "max_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
        "seed": 1,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "description": "The answer.",
                "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
            },
        },
        "n": 1,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.1,
        "logprobs": True,
        "top_logprobs": 1,
        "logit_bias": {"50256": -100},
        "tools": [copy.deepcopy(TOOL)],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "parallel_tool_calls": False,
        "reasoning_effort": "low",
        "verbosity": "low",
        "modalities": ["text"],
        "prediction": {"type": "content", "content": "predicted text"},
        "web_search_options": {"user_location": {"approximate": {"city": "Lyon"}}},
        "service_tier": "auto",
        "store": True,
        "metadata": {"purpose": "tests"},
        "user": "user-1",
        "safety_identifier": "sid-1",
        "prompt_cache_key": "pck-1",
    }
    job = chat_job("j1", messages=conversation(), params=params)
    for path, value in changes.items():
        _set(job, path.split("."), value)
    return job


def _set(node: Any, steps: list[str], value: Any) -> None:
    for step in steps[:-1]:
        node = node[int(step)] if isinstance(node, list) else node[step]
    last = steps[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


# where a term or an address may be put, and how (a valid job either way)
FIELDS: dict[str, Callable[[str], dict[str, Any]]] = {
    "message text": lambda v: maximal(**{"messages.0.content.0.text": f"hi {v}"}),
    "tool message": lambda v: maximal(**{"messages.2.content": f"found {v}"}),
    "tool call arguments": lambda v: maximal(
        **{"messages.1.tool_calls.0.function.arguments": json.dumps({"q": v})}
    ),
    "message name": lambda v: maximal(messages=conversation(name=v)),
    "PDF filename": lambda v: maximal(messages=conversation(filename=f"{v}.pdf")),
    "prediction": lambda v: maximal(**{"params.prediction.content": f"predicted {v}"}),
    "prediction part": lambda v: maximal(
        **{"params.prediction.content": [{"type": "text", "text": f"predicted {v}"}]}
    ),
    "metadata value": lambda v: maximal(**{"params.metadata": {"purpose": v}}),
    "user": lambda v: maximal(**{"params.user": v}),
    "safety_identifier": lambda v: maximal(**{"params.safety_identifier": v}),
    "prompt_cache_key": lambda v: maximal(**{"params.prompt_cache_key": v}),
}
# fields that cannot be rewritten: a term or an address blocks the job
AS_SENT: dict[str, Callable[[str], dict[str, Any]]] = {
    "image URL": lambda v: maximal(**{"messages.0.content.1.image_url.url": f"{URL}?{v}"}),
    "tool call id": lambda v: maximal(messages=conversation(call_id=f"call-{v}")),
    "metadata key": lambda v: maximal(**{"params.metadata": {v: "x"}}),
    "stop": lambda v: maximal(**{"params.stop": [f"{v} end"]}),
    "tool description": lambda v: maximal(**{"params.tools.0.function.description": v}),
    "tool parameter": lambda v: maximal(
        **{"params.tools.0.function.parameters": {"type": "object", "properties": {v: {}}}}
    ),
    "schema": lambda v: maximal(**{"params.response_format.json_schema.description": v}),
    "web_search_options": lambda v: maximal(
        **{"params.web_search_options": {"user_location": {"approximate": {"city": v}}}}
    ),
    "service_tier": lambda v: maximal(**{"params.service_tier": v}),
    "logit_bias key": lambda v: maximal(**{"params.logit_bias": {v: 1}}),
}
# names only take letters, digits, '_' and '-': a term, not an address
NAMES: dict[str, Callable[[str], dict[str, Any]]] = {
    "tool name and choice": lambda v: maximal(
        **{
            "params.tools.0.function.name": f"{v}-tool",
            "params.tool_choice.function.name": f"{v}-tool",
            "messages.1.tool_calls.0.function.name": f"{v}-tool",
        }
    ),
    "schema name": lambda v: maximal(**{"params.response_format.json_schema.name": f"{v}-x"}),
}


def sent(provider: ScriptedProvider) -> str:
    """Every byte of the calls the provider was given, as its adapter would send them."""
    bodies = []
    for call in provider.calls:
        if hasattr(call, "messages"):
            bodies.append(chat_body(call))  # type: ignore[arg-type]
        else:
            bodies.append({"input": call.inputs, "user": call.user})
    return json.dumps(bodies)


async def outcome(job: dict[str, Any]) -> tuple[dict[str, Any], ScriptedProvider]:
    provider = ScriptedProvider("sim", ChatResponse('{"a": "x"}', "stop", 10, 2))
    harness = pipeline_for(config(), {"sim": provider})
    await harness.pipeline.handle(harness.record(job))
    (result,) = harness.results()
    return result, provider


def test_the_maximal_job_is_valid_and_sets_every_chat_parameter() -> None:
    """The specs below cover every field: a parameter added to Params must be added here."""
    job = JobRequest.model_validate(maximal())
    assert job.params is not None
    chat_fields = set(Params.model_fields) - {
        "dimensions",
        "encoding_format",
        "max_completion_tokens",
    }
    assert chat_fields <= job.params.model_fields_set


@pytest.mark.parametrize("field", sorted({**FIELDS, **AS_SENT, **NAMES}))
async def test_a_blocked_term_in_any_field_never_reaches_the_provider(field: str) -> None:
    make = {**FIELDS, **AS_SENT, **NAMES}[field]
    result, provider = await outcome(make(TERM))
    assert result["status"] == "rejected", result
    assert result["error"]["code"] == "content_blocked"
    assert provider.calls == []


@pytest.mark.parametrize("field", sorted(FIELDS))
async def test_an_address_in_a_field_the_model_reads_is_redacted_before_the_call(
    field: str,
) -> None:
    result, provider = await outcome(FIELDS[field](EMAIL))
    assert result["status"] == "succeeded", result
    wire = sent(provider)
    assert EMAIL not in wire and "[EMAIL_1]" in wire


@pytest.mark.parametrize("field", sorted(AS_SENT))
async def test_an_address_in_a_field_sent_as_it_is_blocks_the_job_naming_the_field(
    field: str,
) -> None:
    result, provider = await outcome(AS_SENT[field](EMAIL))
    assert result["status"] == "rejected", result
    assert result["error"]["code"] == "content_blocked"
    assert "cannot be redacted" in result["error"]["message"]
    assert EMAIL not in result["error"]["message"]
    assert provider.calls == []


async def test_an_embedding_jobs_user_is_screened_like_its_inputs() -> None:
    answer = EmbeddingResponse([[0.1, 0.2]], 3)
    provider = ScriptedProvider("sim", answer)
    harness = pipeline_for(config(), {"sim": provider})
    job = embedding_job("e1", input=["a"], params={"user": EMAIL})
    await harness.pipeline.handle(harness.record(job))
    assert harness.results()[0]["status"] == "succeeded"
    assert EMAIL not in sent(provider) and "[EMAIL_1]" in sent(provider)
    blocked = embedding_job("e2", input=["a"], params={"user": TERM})
    await harness.pipeline.handle(harness.record(blocked))
    assert harness.results()[1]["error"]["code"] == "content_blocked"


def _strings(value: Any, path: tuple[Any, ...] = ()) -> set[tuple[Any, ...]]:
    """The path of every string in a JSON value (indexes as '*')."""
    if isinstance(value, str):
        return {path}
    found: set[tuple[Any, ...]] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            found |= _strings(item, (*path, key))
    elif isinstance(value, list):
        for item in value:
            found |= _strings(item, (*path, "*"))
    return found


def test_every_string_the_openai_wire_carries_is_screened_or_fixed_vocabulary() -> None:
    """The property, over the widest adapter (OpenAI's body carries every message field and
    parameter as it is): each string of the body is a text the walker screens, vocabulary the
    schema fixes (roles, types, enums) or inline data no text guardrail reads. The walker
    screens by default: a field added later is screened unless it is listed here."""
    job = JobRequest.model_validate(maximal())
    messages = [m.model_dump(mode="json", exclude_none=True) for m in job.messages or ()]
    call = provider_call(job, config().routes["summarize"].deployments[0], messages)
    body = chat_body(call)  # type: ignore[arg-type]
    screened = {
        tuple("*" if isinstance(step, int) else step for step in text.path)
        for text in sent_texts(job, messages)
        if not text.key
    }
    # the body's params are top-level fields: the walker's are under "params"
    screened = {shape[1:] if shape[0] == "params" else shape for shape in screened}
    vocabulary = {
        ("messages", "*", "role"),
        ("messages", "*", "content", "*", "type"),
        ("messages", "*", "content", "*", "image_url", "detail"),
        ("messages", "*", "content", "*", "file", "file_data"),  # a PDF's bytes
        ("messages", "*", "tool_calls", "*", "type"),
        ("tools", "*", "type"),
        ("tool_choice", "type"),
        ("response_format", "type"),
        ("prediction", "type"),
        ("reasoning_effort",),
        ("verbosity",),
        ("modalities", "*"),
    }
    unscreened = _strings(body) - vocabulary - screened
    assert not unscreened, sorted(unscreened)
    assert screened & vocabulary == set()  # vocabulary is not screened: a pattern never hits it


def test_texts_the_model_reads_are_told_from_fields_sent_as_they_are() -> None:
    job = JobRequest.model_validate(maximal())
    messages = [m.model_dump(mode="json", exclude_none=True) for m in job.messages or ()]
    uses = {".".join(map(str, t.path)): t.use for t in sent_texts(job, messages) if not t.key}
    assert uses["messages.0.name"] is Use.READ
    assert uses["messages.0.content.2.file.filename"] is Use.READ
    assert uses["params.prediction.content"] is Use.READ
    assert uses["params.metadata.purpose"] is Use.READ
    assert uses["params.user"] is Use.READ
    assert uses["messages.0.content.1.image_url.url"] is Use.AS_SENT
    assert uses["messages.2.tool_call_id"] is Use.AS_SENT
    assert uses["params.tools.0.function.description"] is Use.AS_SENT
    assert "messages.0.content.2.file.file_data" not in uses  # inline bytes: not text


# -- over the real broker and the simulator's received bytes -----------------------------------


async def test_the_simulator_receives_no_blocked_term_and_no_address_from_any_field(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    redacted = [{**make(EMAIL), "job_id": f"pii-{i}"} for i, make in enumerate(FIELDS.values())]
    blocked = [
        {**make(TERM), "job_id": f"term-{i}"}
        for i, make in enumerate({**FIELDS, **AS_SENT, **NAMES}.values())
    ]
    refused = [{**make(EMAIL), "job_id": f"as-sent-{i}"} for i, make in enumerate(AS_SENT.values())]
    jobs = copy.deepcopy([*redacted, *blocked, *refused])
    async with SimulatorServer(SimulatorConfig(seed=11)) as simulator:
        settings = make_settings(database_url=sqlite_url)
        async with running_worker(settings, config(simulator.base_url)):
            async with HeadwayClient(settings) as client:
                await client.submit_many(jobs)
            results = await read_topic(
                settings.kafka_bootstrap or "", settings.topics.results, until_keys=len(jobs)
            )
        received = json.dumps([body for _, _, body in simulator.requests])
        called = dict(simulator.stats.jobs)
    by_key = {key: copies[0] for key, copies in results.by_key.items()}
    assert len(by_key) == len(jobs)
    for job in redacted:
        assert by_key[job["job_id"]]["status"] == "succeeded", by_key[job["job_id"]]
    for job in [*blocked, *refused]:
        result = by_key[job["job_id"]]
        assert result["status"] == "rejected" and result["error"]["code"] == "content_blocked"
        assert called.get(job["job_id"], 0) == 0
    assert TERM not in received and "example.com" not in received
    assert received.count("[EMAIL_1]") >= len(redacted)
