"""Rich jobs through the pipeline on in-memory fakes: what a deployment cannot take never
reaches it (the next one takes it, or the job is rejected naming the part), every message field
reaches the provider as sent, a JSON answer that fails its schema is asked for once more and
then fails, content-policy refusals fail or fail over as the route says, guardrails see and
restore every text."""

from __future__ import annotations

import json
from typing import Any

from broker.errors import ProviderContentFiltered
from schemas.results import FunctionCallOut, ToolCallOut
from tests.fakes import Harness, ScriptedProvider, config_of, pipeline_for
from tests.helpers import chat_job
from workers.providers.base import ChatCall, ChatResponse

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP4z8DwHwAF" + (
    "AAH/q842iQAAAABJRU5ErkJggg=="
)
IMAGE = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "total",
        "schema": {
            "type": "object",
            "properties": {"total": {"type": "number"}},
            "required": ["total"],
        },
    },
}


def harness(*answers: Any, route: dict[str, Any] | None = None, **tenant: Any) -> Harness:
    raw: dict[str, Any] = {
        "providers": {
            "claude": {"type": "anthropic", "base_url": "http://127.0.0.1:9"},
            "gpt": {"type": "openai", "base_url": "http://127.0.0.1:9"},
        },
        "routes": {
            "mixed": route
            or {
                "kind": "chat",
                "deployments": [
                    {"provider": "claude", "model": "c"},
                    {"provider": "gpt", "model": "g"},
                ],
            },
            "claude-only": {"kind": "chat", "deployments": [{"provider": "claude", "model": "c"}]},
        },
        "tenants": {"demo": tenant},
        "guardrails": {"pii": {"redact_pii": ["email"], "restore_pii": True}},
    }
    providers = {
        "claude": ScriptedProvider("claude", *answers),
        "gpt": ScriptedProvider("gpt", *answers),
    }
    built = pipeline_for(config_of(raw), providers)
    built.providers = providers  # type: ignore[attr-defined]
    return built


def sent(built: Harness, name: str) -> list[ChatCall]:
    return built.providers[name].calls  # type: ignore[attr-defined,no-any-return]


async def run(built: Harness, **job: Any) -> dict[str, Any]:
    await built.pipeline.handle(built.record(chat_job("j1", route="mixed") | job))
    [result] = built.results()
    return result  # type: ignore[no-any-return]


async def test_a_feature_the_first_deployment_lacks_goes_to_the_next_one() -> None:
    built = harness(ChatResponse("three answers", "stop", 10, 3))

    result = await run(built, params={"n": 2})

    assert result["status"] == "succeeded" and result["deployment"] == "g"
    assert sent(built, "claude") == [] and len(sent(built, "gpt")) == 1


async def test_a_feature_no_deployment_takes_is_rejected_naming_it_and_nothing_is_called() -> None:
    built = harness()

    result = await run(built, route="claude-only", params={"logit_bias": {"50256": -100}})

    assert result["status"] == "rejected"
    assert result["error"]["code"] == "unsupported_feature"
    assert result["error"]["message"].startswith("params.logit_bias: logit_bias")
    assert sent(built, "claude") == []


async def test_every_message_field_reaches_the_provider_as_sent() -> None:
    built = harness()
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is it?"}, IMAGE]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    tools = [{"type": "function", "function": {"name": "f"}}]

    await run(built, messages=messages, params={"tools": tools})

    [call] = sent(built, "claude")
    without_nulls = [{k: v for k, v in m.items() if v is not None} for m in messages]
    assert call.messages == without_nulls


async def test_an_answer_failing_its_schema_is_asked_once_more_then_succeeds_parsed() -> None:
    built = harness(ChatResponse("{}", "stop", 10, 1), ChatResponse('{"total": 3}', "stop", 10, 4))

    result = await run(built, params={"response_format": SCHEMA})

    assert result["status"] == "succeeded" and result["output"]["parsed"] == {"total": 3}
    assert len(sent(built, "claude")) == 2 and result["usage"]["output_tokens"] == 5


async def test_an_answer_failing_its_schema_twice_fails_invalid_output_and_both_are_paid() -> None:
    built = harness(ChatResponse('{"total": "three"}', "stop", 10, 4))

    result = await run(built, params={"response_format": SCHEMA})

    assert result["status"] == "failed" and result["error"]["code"] == "invalid_output"
    assert "total: 'three' is not of type 'number'" in result["error"]["message"]
    assert len(sent(built, "claude")) == 2 and sent(built, "gpt") == []
    assert result["usage"]["input_tokens"] == 20


async def test_a_content_policy_refusal_ends_the_job_unless_the_route_fails_over_on_it() -> None:
    refused = ProviderContentFiltered("refused", provider="claude")
    ended = harness(refused)
    result = await run(ended)
    assert result["status"] == "failed" and result["error"]["code"] == "content_filtered"
    assert len(sent(ended, "claude")) == 1 and sent(ended, "gpt") == []

    route = {
        "kind": "chat",
        "failover_on": ["content_filter"],
        "deployments": [{"provider": "claude", "model": "c"}, {"provider": "gpt", "model": "g"}],
    }
    moved = harness(route=route)
    moved.providers["claude"].script = [refused]  # type: ignore[attr-defined]
    result = await run(moved)
    assert result["status"] == "succeeded" and result["deployment"] == "g"
    assert len(sent(moved, "claude")) == 1


async def test_guardrails_redact_every_text_and_restore_it_in_text_and_tool_arguments() -> None:
    def echo_email(placeholder: str) -> ChatResponse:
        arguments = json.dumps({"to": placeholder})
        call = ToolCallOut(id="c", function=FunctionCallOut(name="send", arguments=arguments))
        return ChatResponse(f"mail {placeholder}", "tool_calls", 10, 2, tool_calls=[call])

    built = harness(route={
        "kind": "chat",
        "guardrails": ["pii"],
        "deployments": [{"provider": "gpt", "model": "g"}],
    })  # fmt: skip
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "mail ann@example.com"}, IMAGE]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c0",
                    "type": "function",
                    "function": {"name": "send", "arguments": '{"to": "bob@example.com"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c0", "content": "sent"},
    ]
    provider = built.providers["gpt"]  # type: ignore[attr-defined]

    async def answer(call: ChatCall) -> ChatResponse:
        provider.calls.append(call)
        text = call.messages[0]["content"][0]["text"]
        return echo_email(text.split()[-1])

    provider.chat = answer
    tools = [{"type": "function", "function": {"name": "send"}}]
    result = await run(built, messages=messages, params={"tools": tools})

    [call] = provider.calls
    seen = json.dumps(call.messages)
    assert "ann@example.com" not in seen and "bob@example.com" not in seen
    assert call.messages[0]["content"][1] == IMAGE
    output = result["output"]
    assert output["text"] == "mail ann@example.com"
    assert json.loads(output["tool_calls"][0]["function"]["arguments"]) == {"to": "ann@example.com"}


async def test_the_batch_lane_checks_structured_output_too() -> None:
    from broker.config import DeploymentConfig
    from schemas.jobs import JobRequest
    from workers.batch_lane.items import execution_of
    from workers.providers.batch_apis import Outcome

    deployment = DeploymentConfig(provider="gpt", model="g", input_usd_per_mtok=1.0)
    job = JobRequest.model_validate(chat_job("j1", params={"response_format": SCHEMA}))

    good = await execution_of(
        deployment, Outcome("c", ChatResponse('{"total": 1}', "stop", 9, 3)), job
    )
    bad = await execution_of(
        deployment, Outcome("c", ChatResponse('{"sum": 1}', "stop", 9, 3)), job
    )

    assert good.output is not None and good.output.parsed == {"total": 1}  # type: ignore[union-attr]
    assert bad.output is None and type(bad.error).__name__ == "ProviderInvalidOutput"
    assert "'total' is a required property" in str(bad.error) and bad.calls[0].input_tokens == 9
