"""Anthropic Messages API: ``POST {base_url}/v1/messages``.

Differences from the OpenAI shape that this adapter maps: system and developer messages travel
in the top-level ``system`` field; ``max_tokens`` is required (``DEFAULT_MAX_TOKENS`` when the
job sets none); ``stop`` becomes ``stop_sequences``; image parts become ``image`` blocks
(``source`` url or base64), PDF parts ``document`` blocks; tools become ``{name, description,
input_schema}``, ``tool_choice`` auto/required/none/named → ``auto``/``any``/``none``/``tool``,
``parallel_tool_calls = false`` → ``disable_parallel_tool_use``; an assistant's tool calls are
``tool_use`` blocks and tool messages ``tool_result`` blocks in a user turn; ``response_format``
(``json_object`` or ``json_schema``) is one forced tool whose input schema is the job's, its
input read back as the answer's text; ``user`` → ``metadata.user_id``. The reply is a list of
content blocks; ``stop_reason`` names differ (``refusal`` →
:class:`~broker.errors.ProviderContentFiltered`); input tokens include prompt-cache reads and
writes; errors carry a ``type`` (``overloaded_error`` → :class:`~broker.errors.ProviderOverloaded`,
``rate_limit_error`` → 429). What Anthropic cannot take (``seed``, ``n``, logprobs, OpenAI's own
fields) never reaches this adapter: the router refuses it (``broker/capabilities.py``).
Embeddings are refused (Anthropic has none) and a route of embeddings cannot name this provider.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from broker.config import ProviderConfig
from broker.errors import ProviderBadRequest, ProviderContentFiltered
from schemas.results import FunctionCallOut, ToolCallOut
from workers.content import media
from workers.providers.base import (
    ChatCall,
    ChatResponse,
    EmbeddingCall,
    EmbeddingResponse,
    JsonHttpProvider,
    WireMessages,
    json_body,
    split_system,
    text_of,
    transport_errors,
)

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


#: the forced tool a structured output is asked for through
ANSWER_TOOL = "respond"


def messages_body(call: ChatCall) -> dict[str, Any]:
    system, conversation = split_system(call.messages)
    body: dict[str, Any] = {
        "model": call.model,
        "messages": wire_messages(conversation),
        "max_tokens": DEFAULT_MAX_TOKENS,
    }
    if system:
        body["system"] = "\n\n".join(system)
    params = call.params
    if params is None:
        return body
    if params.output_limit is not None:
        body["max_tokens"] = params.output_limit
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.top_p is not None:
        body["top_p"] = params.top_p
    if params.stop is not None:
        body["stop_sequences"] = [params.stop] if isinstance(params.stop, str) else params.stop
    if params.user is not None:
        body["metadata"] = {"user_id": params.user}
    if params.tools is not None:
        body["tools"] = [
            {
                "name": tool.function.name,
                "description": tool.function.description or "",
                "input_schema": tool.function.parameters or {"type": "object"},
            }
            for tool in params.tools
        ]
        choice = _tool_choice(params.tool_choice, params.parallel_tool_calls)
        if choice is not None:
            body["tool_choice"] = choice
    answer_format = structured(params.response_format)
    if answer_format is not None:
        if params.tools is not None:
            raise ProviderBadRequest(
                "anthropic: params.tools together with a JSON response_format cannot be sent "
                "(the format is a forced tool)"
            )
        body["tools"] = [answer_format]
        body["tool_choice"] = {"type": "tool", "name": ANSWER_TOOL}
    return body


def structured(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The forced tool asking for ``response_format``'s JSON, or None (text)."""
    kind = (response_format or {}).get("type")
    if kind == "json_object":
        return {"name": ANSWER_TOOL, "description": "Answer as JSON.", "input_schema": OBJECT}
    if kind != "json_schema":
        return None
    spec = (response_format or {}).get("json_schema") or {}
    return {
        "name": ANSWER_TOOL,
        "description": spec.get("description") or "Answer in this schema.",
        "input_schema": spec.get("schema") or OBJECT,
    }


OBJECT = {"type": "object"}


def forced(call: ChatCall) -> bool:
    """Whether the call's answer comes back as the forced structured-output tool's input."""
    return call.params is not None and structured(call.params.response_format) is not None


def _tool_choice(choice: Any, parallel: bool | None) -> dict[str, Any] | None:
    if choice is None:
        wire: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif isinstance(choice, str):
        wire = {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}
    else:
        wire = {"type": "tool", "name": choice.function.name}
    if wire is not None and parallel is False and wire["type"] != "none":
        wire["disable_parallel_tool_use"] = True
    return wire


def wire_messages(conversation: WireMessages) -> list[dict[str, Any]]:
    """User/assistant turns in Anthropic's blocks; a run of tool messages is one user turn of
    ``tool_result`` blocks."""
    turns: list[dict[str, Any]] = []
    for message in conversation:
        role, content = message["role"], message.get("content")
        if role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message["tool_call_id"],
                "content": text_of(content),
            }
            if turns and turns[-1]["role"] == "user" and _all_results(turns[-1]["content"]):
                turns[-1]["content"].append(block)
            else:
                turns.append({"role": "user", "content": [block]})
            continue
        calls = message.get("tool_calls")
        if isinstance(content, str) and not calls:
            turns.append({"role": role, "content": content})
            continue
        blocks = [_block(part) for part in content] if isinstance(content, list) else []
        if isinstance(content, str) and content:
            blocks.append({"type": "text", "text": content})
        for call in calls or ():
            function = call["function"]
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call["id"],
                    "name": function["name"],
                    "input": json.loads(function["arguments"]),
                }
            )
        turns.append({"role": role, "content": blocks})
    return turns


def _all_results(content: Any) -> bool:
    return isinstance(content, list) and all(b.get("type") == "tool_result" for b in content)


def _block(part: dict[str, Any]) -> dict[str, Any]:
    kind = part["type"]
    if kind == "text":
        return {"type": "text", "text": part["text"]}
    if kind == "image_url":
        url = part["image_url"]["url"]
        data = media.inline(url)
        if data is None:
            return {"type": "image", "source": {"type": "url", "url": url}}
        source = {"type": "base64", "media_type": data.mime, "data": data.payload}
        return {"type": "image", "source": source}
    data = media.inline(part["file"]["file_data"])
    assert data is not None  # the schema takes PDFs as data URLs only
    source = {"type": "base64", "media_type": data.mime, "data": data.payload}
    document: dict[str, Any] = {"type": "document", "source": source}
    if part["file"].get("filename"):
        document["title"] = part["file"]["filename"]
    return document


def read_message(data: Any, forced: bool = False) -> ChatResponse:
    """The reply; ``forced``: the answer is the forced structured-output tool's input."""
    stop_reason = data.get("stop_reason") or "end_turn"
    if stop_reason == "refusal":
        raise ProviderContentFiltered("anthropic: the model refused (stop_reason = refusal)")
    blocks = data["content"]
    text = "".join(block["text"] for block in blocks if block.get("type") == "text")
    uses = [block for block in blocks if block.get("type") == "tool_use"]
    calls = None
    if forced:
        answer = next((b for b in uses if b["name"] == ANSWER_TOOL), None)
        if answer is None:  # a broken answer: mapped to ProviderResponseError by the caller
            raise ValueError(f"no {ANSWER_TOOL!r} tool_use block for the structured answer")
        text, stop_reason = json.dumps(answer["input"]), "end_turn"
    elif uses:
        calls = [
            ToolCallOut(
                id=block["id"],
                function=FunctionCallOut(name=block["name"], arguments=json.dumps(block["input"])),
            )
            for block in uses
        ]
    usage = data["usage"]
    input_tokens = (
        int(usage.get("input_tokens", 0))
        + int(usage.get("cache_creation_input_tokens") or 0)
        + int(usage.get("cache_read_input_tokens") or 0)
    )
    return ChatResponse(
        text=text,
        finish_reason=FINISH_REASONS.get(stop_reason, stop_reason),
        input_tokens=input_tokens,
        output_tokens=int(usage.get("output_tokens", 0)),
        tool_calls=calls,
    )


def error_type(response: httpx.Response) -> str | None:
    body = json_body(response)
    error = body.get("error") if body else None
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else None


class AnthropicProvider(JsonHttpProvider):
    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        client: httpx.AsyncClient,
        *,
        api_key: str | None = None,
    ) -> None:
        super().__init__(name, config, client)
        base = config.base_url.rstrip("/")
        self._url = httpx.URL(base + ("/messages" if base.endswith("/v1") else "/v1/messages"))
        self._headers = {"anthropic-version": config.api_version or DEFAULT_API_VERSION}
        if api_key:
            self._headers["x-api-key"] = api_key

    def error_details(self, response: httpx.Response) -> tuple[float | None, bool]:
        return None, error_type(response) == "overloaded_error"

    async def chat(self, call: ChatCall) -> ChatResponse:
        with transport_errors(self.name):  # attributes a ProviderBadRequest to this provider
            body = messages_body(call)
        data = await self.post(self._url, body, self._headers)
        with transport_errors(self.name):
            return read_message(data, forced(call))

    async def embed(self, call: EmbeddingCall) -> EmbeddingResponse:
        raise ProviderBadRequest("anthropic has no embeddings API", provider=self.name)
