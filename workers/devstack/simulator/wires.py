"""The simulator's wire formats: OpenAI (and Azure OpenAI), Anthropic Messages, Gemini.

Every endpoint passes the same gate (``SimulatorServer.gate``: call counting, RPM limit,
latency, injected errors); a gate failure or a bad request is rendered in the error shape of
the endpoint's provider, with that provider's Retry-After convention. Bodies and error shapes
follow each provider's API reference (recorded copies: ``tests/fixtures/providers/``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from workers.devstack.simulator import answers, behaviour

if TYPE_CHECKING:
    from workers.devstack.simulator.server import SimulatorServer


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a call is refused: ``kind`` is rate_limited | server_error | overloaded | bad_request."""

    status: int
    kind: str
    message: str
    retry_after: int | None = None


# -- error shapes -----------------------------------------------------------------------------

OPENAI_TYPES = {
    "rate_limited": "rate_limit_exceeded",
    "server_error": "server_error",
    "overloaded": "server_error",
    "bad_request": "invalid_request_error",
    "not_found": "invalid_request_error",  # OpenAI's type for an unknown batch or file
}
ANTHROPIC_TYPES = {
    "rate_limited": "rate_limit_error",
    "server_error": "api_error",
    "overloaded": "overloaded_error",
    "bad_request": "invalid_request_error",
    "invalid_request_error": "invalid_request_error",
    "not_found": "not_found_error",
    "not_found_error": "not_found_error",
}
GEMINI_STATUS = {
    "rate_limited": "RESOURCE_EXHAUSTED",
    "server_error": "INTERNAL",
    "overloaded": "UNAVAILABLE",
    "bad_request": "INVALID_ARGUMENT",
}


def _retry_headers(failure: Failure) -> dict[str, str]:
    if failure.retry_after is None:
        return {}
    return {"Retry-After": str(failure.retry_after)}


def openai_error(failure: Failure) -> web.Response:
    kind = OPENAI_TYPES[failure.kind]
    body = {"error": {"message": failure.message, "type": kind, "param": None, "code": kind}}
    headers = _retry_headers(failure)
    if failure.kind == "rate_limited":
        headers["x-ratelimit-remaining-requests"] = "0"
    return web.json_response(body, status=failure.status, headers=headers)


def anthropic_error(failure: Failure) -> web.Response:
    body = {
        "type": "error",
        "error": {"type": ANTHROPIC_TYPES[failure.kind], "message": failure.message},
    }
    return web.json_response(body, status=failure.status, headers=_retry_headers(failure))


def gemini_error(failure: Failure) -> web.Response:
    error: dict[str, Any] = {
        "code": failure.status,
        "message": failure.message,
        "status": GEMINI_STATUS[failure.kind],
    }
    if failure.retry_after is not None:  # Gemini says when to retry in the body, not a header
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{failure.retry_after}s",
            }
        ]
    return web.json_response({"error": error}, status=failure.status)


def _bad(message: str) -> Failure:
    return Failure(400, "bad_request", message)


# -- OpenAI and Azure OpenAI ------------------------------------------------------------------


def _usage_allowed(sim: SimulatorServer) -> bool:
    return not sim.config.omit_usage


async def openai_chat(sim: SimulatorServer, request: web.Request) -> web.Response:
    return await _openai_chat(sim, request, None)


async def azure_chat(sim: SimulatorServer, request: web.Request) -> web.Response:
    if not request.query.get("api-version"):
        return openai_error(_bad("Missing required query parameter: api-version"))
    return await _openai_chat(sim, request, request.match_info["deployment"])


async def _openai_chat(
    sim: SimulatorServer, request: web.Request, deployment: str | None
) -> web.Response:
    return await _openai_answer(sim, request, deployment, openai_chat_reply)


async def _openai_answer(
    sim: SimulatorServer,
    request: web.Request,
    deployment: str | None,
    reply_to: Callable[[SimulatorServer, dict[str, Any], Any], dict[str, Any] | Failure],
) -> web.Response:
    """The OpenAI wire's online answer: the gate (limits, latency, errors), then the reply."""
    body, failure = await sim.gate(request)
    if failure is not None or body is None:
        return openai_error(failure or _bad("bad request"))
    reply = reply_to(sim, body, deployment or body.get("model"))
    if isinstance(reply, Failure):
        return openai_error(reply)
    return web.json_response(reply)


def openai_chat_reply(
    sim: SimulatorServer, body: dict[str, Any], model: Any, *, batch: bool = False
) -> dict[str, Any] | Failure:
    """A chat.completion body for ``body`` (or why it is refused); shared by the online
    endpoint and the Batch API (``batch``: counted as a batch item, not an online call)."""
    messages = body.get("messages")
    if not isinstance(model, str):
        return sim.bad_request("you must provide a model parameter")
    if not isinstance(messages, list) or not messages:
        return sim.bad_request("'messages' must be a non-empty array")
    everything = json.dumps(messages)
    if behaviour.is_poison(everything):
        return sim.bad_request("Invalid 'messages': rejected content")
    refused = _refused_parts(model, messages)
    if refused is not None:
        return sim.bad_request(refused)
    sim.count_chat(model, batch=batch)
    if _rich(body, everything):
        ask = answers.from_openai(body, model, batch)
        choices, out_tokens = answers.openai_choices(ask, bool(body.get("logprobs")))
        in_tokens = answers.input_tokens(messages, *answers.openai_definitions(body))
    else:
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        text, out_tokens, finish = behaviour.completion(messages, max_tokens)
        in_tokens = answers.input_tokens(messages, body.get("prediction"))
        message = {"role": "assistant", "content": text}
        choices = [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}]
    reply: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "system_fingerprint": "fp_headway_sim",
    }
    if _usage_allowed(sim):
        reply["usage"] = {
            "prompt_tokens": in_tokens,
            "completion_tokens": out_tokens,
            "total_tokens": in_tokens + out_tokens,
        }
    return reply


RICH_FIELDS = ("tools", "response_format", "n", "logprobs")
TEXT_ONLY = "text-only"  # a simulated model whose name has this refuses image and file parts


def _rich(body: dict[str, Any], everything: str) -> bool:
    """More than text in or out: tools, structured output, several answers, logprobs,
    content parts — or a prompt asking for a refusal (``everything``: the messages' JSON)."""
    if any(body.get(name) for name in RICH_FIELDS) or answers.CONTENT_FILTER in everything:
        return True
    return any(not isinstance(m.get("content"), str) for m in body["messages"])


def _refused_parts(model: str, messages: list[Any]) -> str | None:
    if TEXT_ONLY not in model:
        return None
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and part.get("type") != "text":
                return f"Invalid 'messages[{index}]': {model} does not support {part.get('type')}"
    return None


async def openai_embeddings(sim: SimulatorServer, request: web.Request) -> web.Response:
    return await _openai_embeddings(sim, request, None)


async def azure_embeddings(sim: SimulatorServer, request: web.Request) -> web.Response:
    if not request.query.get("api-version"):
        return openai_error(_bad("Missing required query parameter: api-version"))
    return await _openai_embeddings(sim, request, request.match_info["deployment"])


async def _openai_embeddings(
    sim: SimulatorServer, request: web.Request, deployment: str | None
) -> web.Response:
    return await _openai_answer(sim, request, deployment, openai_embeddings_reply)


def openai_embeddings_reply(
    sim: SimulatorServer, body: dict[str, Any], model: Any, *, batch: bool = False
) -> dict[str, Any] | Failure:
    """An embeddings list body for ``body`` (or why it is refused)."""
    if not isinstance(model, str):
        return sim.bad_request("you must provide a model parameter")
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        return sim.bad_request("'input' must be a string or an array of strings")
    if len(inputs) > 2048:
        return sim.bad_request("'input' has more than 2048 items")
    bad = next((i for i, text in enumerate(inputs) if behaviour.is_poison(text)), None)
    if bad is not None:
        return sim.bad_request(f"Invalid 'input[{bad}]': rejected input")
    sim.count_embeddings(model, len(inputs), batch=batch)
    dimensions = int(body.get("dimensions") or behaviour.DEFAULT_EMBEDDING_DIMENSIONS)
    tokens = sum(behaviour.count_tokens(text) for text in inputs)
    reply: dict[str, Any] = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": behaviour.embedding(t, dimensions)}
            for i, t in enumerate(inputs)
        ],
        "model": model,
    }
    if _usage_allowed(sim):
        reply["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return reply


# -- Anthropic Messages -----------------------------------------------------------------------


async def anthropic_messages(sim: SimulatorServer, request: web.Request) -> web.Response:
    if not request.headers.get("anthropic-version"):
        return anthropic_error(_bad("anthropic-version: header is required"))
    body, failure = await sim.gate(request)
    if failure is not None or body is None:
        return anthropic_error(failure or _bad("bad request"))
    reply = anthropic_message_reply(sim, body)
    if isinstance(reply, Failure):
        return anthropic_error(reply)
    return web.json_response(reply)


def anthropic_message_reply(
    sim: SimulatorServer, body: dict[str, Any], *, batch: bool = False
) -> dict[str, Any] | Failure:
    """A Message body for ``body`` (or why it is refused); online and Message Batches."""
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str):
        return sim.bad_request("model: Field required")
    if not isinstance(body.get("max_tokens"), int):
        return sim.bad_request("max_tokens: Field required")
    if not isinstance(messages, list) or not messages:
        return sim.bad_request("messages: at least one message is required")
    if any(m.get("role") not in ("user", "assistant") for m in messages):
        return sim.bad_request(
            "messages: roles must be 'user' or 'assistant' (system is top-level)"
        )
    if behaviour.is_poison(json.dumps(messages)):
        return sim.bad_request("messages: rejected content")
    neutral = answers.neutral_anthropic(messages)
    if TEXT_ONLY in model and answers.has_media(neutral):
        return sim.bad_request(f"messages: {model} does not support image or document input")
    sim.count_chat(model, batch=batch)
    system = body.get("system")
    if isinstance(system, str):
        neutral.insert(0, {"role": "system", "content": system})
    ask = answers.from_anthropic(body, neutral, batch)
    content, stop_reason, out_tokens = answers.anthropic_content(ask)
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": answers.input_tokens(neutral, *answers.anthropic_definitions(body)),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": out_tokens,
        },
    }


# -- Gemini -----------------------------------------------------------------------------------


async def gemini_model_call(sim: SimulatorServer, request: web.Request) -> web.Response:
    model, _, method = request.match_info["model_method"].partition(":")
    if method == "generateContent":
        return await _gemini_generate(sim, request, model)
    if method == "batchEmbedContents":
        return await _gemini_embed(sim, request, model)
    return gemini_error(Failure(404, "bad_request", f"Method {method!r} not found"))


async def _gemini_generate(sim: SimulatorServer, request: web.Request, model: str) -> web.Response:
    body, failure = await sim.gate(request)
    if failure is not None or body is None:
        return gemini_error(failure or _bad("bad request"))
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return gemini_error(
            sim.bad_request("* GenerateContentRequest.contents: contents is not specified")
        )
    messages = answers.neutral_gemini(contents)
    if behaviour.is_poison(json.dumps(messages)):
        return gemini_error(sim.bad_request("* GenerateContentRequest.contents: rejected content"))
    if TEXT_ONLY in model and answers.has_media(messages):
        return gemini_error(sim.bad_request(f"* {model} does not support inline data"))
    system = body.get("systemInstruction")
    if isinstance(system, dict):
        text = "".join(p.get("text", "") for p in system.get("parts") or [])
        messages.insert(0, {"role": "system", "content": text})
    sim.count_chat(model)
    candidates, out_tokens = answers.gemini_candidates(answers.from_gemini(body, messages, model))
    in_tokens = answers.input_tokens(messages, *answers.gemini_definitions(body))
    return web.json_response(
        {
            "candidates": candidates,
            "usageMetadata": {
                "promptTokenCount": in_tokens,
                "candidatesTokenCount": out_tokens,
                "totalTokenCount": in_tokens + out_tokens,
            },
            "modelVersion": model,
        }
    )


async def _gemini_embed(sim: SimulatorServer, request: web.Request, model: str) -> web.Response:
    body, failure = await sim.gate(request)
    if failure is not None or body is None:
        return gemini_error(failure or _bad("bad request"))
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        return gemini_error(sim.bad_request("* BatchEmbedContentsRequest.requests: required"))
    texts = [
        "".join(p.get("text", "") for p in (r.get("content") or {}).get("parts") or [])
        for r in requests
    ]
    sim.count_embeddings(model, len(texts))
    dimensions = int(
        requests[0].get("outputDimensionality") or behaviour.DEFAULT_EMBEDDING_DIMENSIONS
    )
    return web.json_response(
        {"embeddings": [{"values": behaviour.embedding(t, dimensions)} for t in texts]}
    )
