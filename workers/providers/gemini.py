"""Google Gemini API: ``models/{model}:generateContent`` and ``:batchEmbedContents``.

``base_url`` is the API root with its version (``DEFAULT_BASE_URL``); the key travels in
``x-goog-api-key``. Mapped: roles (``assistant`` → ``model``; system and developer messages →
``systemInstruction``), inline images and PDFs → ``inlineData`` parts, an assistant's tool calls
→ ``functionCall`` parts and tool messages → ``functionResponse`` parts (named by the call they
answer), tools → ``functionDeclarations`` (``parametersJsonSchema``), ``tool_choice`` →
``toolConfig.functionCallingConfig`` (AUTO / ANY / NONE, ``allowedFunctionNames``), parameters
into ``generationConfig`` (``response_format`` → JSON MIME type and schema, ``n`` →
``candidateCount``, penalties), ``finishReason`` names, ``usageMetadata`` (thinking tokens are
billed as output), safety blocks (no candidates with a ``blockReason``, or a ``SAFETY``-like
finish) → :class:`~broker.errors.ProviderContentFiltered`, and errors in the
``google.rpc.Status`` shape, where a 429's wait is in a ``RetryInfo`` detail (``"retryDelay":
"30s"``). Embedding responses carry no token counts: they are estimated and marked so.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from broker.config import ProviderConfig
from broker.errors import ProviderBadRequest, ProviderContentFiltered
from schemas.results import Choice, FunctionCallOut, ToolCallOut
from workers.calls import tokens
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

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
}


FILTERED = frozenset(("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"))


def generate_body(call: ChatCall) -> dict[str, Any]:
    system, conversation = split_system(call.messages)
    body: dict[str, Any] = {"contents": contents(conversation)}
    if system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    config = generation_config(call)
    if config:
        body["generationConfig"] = config
    params = call.params
    if params is not None and params.tools is not None:
        body["tools"] = [
            {
                "functionDeclarations": [
                    _declaration(tool.function.name, tool.function.description, tool.function)
                    for tool in params.tools
                ]
            }
        ]
        if params.tool_choice is not None:
            body["toolConfig"] = {"functionCallingConfig": _calling(params.tool_choice)}
    return body


def _declaration(name: str, description: str | None, function: Any) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": name, "description": description or ""}
    if function.parameters is not None:
        declaration["parametersJsonSchema"] = function.parameters
    return declaration


def _calling(choice: Any) -> dict[str, Any]:
    if isinstance(choice, str):
        return {"mode": {"auto": "AUTO", "required": "ANY", "none": "NONE"}[choice]}
    return {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}


def contents(conversation: WireMessages) -> list[dict[str, Any]]:
    """Turns of parts; a run of tool messages is one user turn of ``functionResponse`` parts,
    each named by the call it answers."""
    names: dict[str, str] = {}  # tool call id → function name
    turns: list[dict[str, Any]] = []
    for message in conversation:
        role, content = message["role"], message.get("content")
        if role == "tool":
            name = names.get(message["tool_call_id"], "tool")
            answer = {"name": name, "response": {"content": text_of(content)}}
            part = {"functionResponse": answer}
            if turns and turns[-1].get("responses"):
                turns[-1]["parts"].append(part)
            else:
                turns.append({"role": "user", "parts": [part], "responses": True})
            continue
        if isinstance(content, str):
            parts: list[dict[str, Any]] = [{"text": content}] if content else []
        else:
            parts = [_part(part) for part in content or ()]
        for call in message.get("tool_calls") or ():
            function = call["function"]
            names[call["id"]] = function["name"]
            arguments = json.loads(function["arguments"])
            parts.append({"functionCall": {"name": function["name"], "args": arguments}})
        turns.append({"role": "model" if role == "assistant" else "user", "parts": parts})
    for turn in turns:
        turn.pop("responses", None)
    return turns


def _part(part: dict[str, Any]) -> dict[str, Any]:
    if part["type"] == "text":
        return {"text": part["text"]}
    url = part["image_url"]["url"] if part["type"] == "image_url" else part["file"]["file_data"]
    data = media.inline(url)
    if data is None:  # the router sends Gemini no https image (broker/capabilities.py)
        raise ProviderBadRequest("gemini: an image by URL cannot be sent; inline it")
    return {"inlineData": {"mimeType": data.mime, "data": data.payload}}


def generation_config(call: ChatCall) -> dict[str, Any]:
    params = call.params
    if params is None:
        return {}
    config: dict[str, Any] = {}
    if params.output_limit is not None:
        config["maxOutputTokens"] = params.output_limit
    if params.temperature is not None:
        config["temperature"] = params.temperature
    if params.top_p is not None:
        config["topP"] = params.top_p
    if params.stop is not None:
        config["stopSequences"] = [params.stop] if isinstance(params.stop, str) else params.stop
    if params.seed is not None:
        config["seed"] = params.seed
    if params.n is not None and params.n > 1:
        config["candidateCount"] = params.n
    if params.presence_penalty is not None:
        config["presencePenalty"] = params.presence_penalty
    if params.frequency_penalty is not None:
        config["frequencyPenalty"] = params.frequency_penalty
    response_format = params.response_format or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema is not None:
            config["responseJsonSchema"] = schema
    return config


def read_generation(data: Any, n: int = 1) -> ChatResponse:
    candidates = data.get("candidates") or []
    if not candidates:
        reason = (data.get("promptFeedback") or {}).get("blockReason")
        if reason:
            raise ProviderContentFiltered(f"gemini blocked the prompt ({reason})")
        raise ProviderBadRequest("gemini returned no output (no candidates)")
    if len(candidates) != n:
        raise ValueError(f"{len(candidates)} candidates for n = {n}")
    choices = [_choice(candidate, index) for index, candidate in enumerate(candidates)]
    first = choices[0]
    usage = data.get("usageMetadata") or {}
    return ChatResponse(
        text=first.text,
        finish_reason=first.finish_reason,
        input_tokens=int(usage.get("promptTokenCount", 0)),
        output_tokens=int(usage.get("candidatesTokenCount", 0))
        + int(usage.get("thoughtsTokenCount", 0)),
        tool_calls=first.tool_calls,
        choices=choices if n > 1 else None,
    )


def _choice(candidate: dict[str, Any], index: int) -> Choice:
    reason = candidate.get("finishReason") or "STOP"
    if reason in FILTERED:
        raise ProviderContentFiltered(f"gemini stopped the answer ({reason})")
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(part.get("text", "") for part in parts if not part.get("thought"))
    calls = [
        ToolCallOut(
            id=str(part["functionCall"].get("id") or f"call_{index}_{position}"),
            function=FunctionCallOut(
                name=part["functionCall"]["name"],
                arguments=json.dumps(part["functionCall"].get("args") or {}),
            ),
        )
        for position, part in enumerate(parts)
        if "functionCall" in part
    ]
    finish = "tool_calls" if calls else FINISH_REASONS.get(reason, reason.lower())
    return Choice(index=index, text=text, finish_reason=finish, tool_calls=calls or None)


def retry_delay(response: httpx.Response) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail of an error body, if there is one."""
    body = json_body(response)
    error = body.get("error") if body else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and detail.get("@type") == RETRY_INFO:
            match = DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


class GeminiProvider(JsonHttpProvider):
    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        client: httpx.AsyncClient,
        *,
        api_key: str | None = None,
    ) -> None:
        super().__init__(name, config, client)
        self._base = config.base_url.rstrip("/")
        self._headers = {"x-goog-api-key": api_key} if api_key else {}
        self._urls: dict[tuple[str, str], httpx.URL] = {}

    def _url(self, model: str, method: str) -> httpx.URL:
        url = self._urls.get((model, method))
        if url is None:
            url = self._urls[(model, method)] = httpx.URL(f"{self._base}/models/{model}:{method}")
        return url

    def error_details(self, response: httpx.Response) -> tuple[float | None, bool]:
        return retry_delay(response), False

    async def chat(self, call: ChatCall) -> ChatResponse:
        url = self._url(call.model, "generateContent")
        with transport_errors(self.name):
            body = generate_body(call)
        data = await self.post(url, body, self._headers)
        n = (call.params.n if call.params else None) or 1
        with transport_errors(self.name):
            return read_generation(data, n)

    async def embed(self, call: EmbeddingCall) -> EmbeddingResponse:
        request: dict[str, Any] = {"model": f"models/{call.model}"}
        if call.dimensions is not None:
            request["outputDimensionality"] = call.dimensions
        body = {"requests": [{**request, "content": {"parts": [{"text": t}]}} for t in call.inputs]}
        data = await self.post(self._url(call.model, "batchEmbedContents"), body, self._headers)
        with transport_errors(self.name):
            embeddings = [list(item["values"]) for item in data["embeddings"]]
            if len(embeddings) != len(call.inputs):
                raise ValueError(f"{len(embeddings)} embeddings for {len(call.inputs)} inputs")
        estimate = tokens.inputs_tokens(call.inputs)
        return EmbeddingResponse(embeddings=embeddings, input_tokens=estimate, estimated=True)
