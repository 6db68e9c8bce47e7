"""Anthropic Messages API: ``POST {base_url}/v1/messages``.

Differences from the OpenAI shape that this adapter maps: system messages travel in the
top-level ``system`` field; ``max_tokens`` is required (``DEFAULT_MAX_TOKENS`` when the job sets
none); ``stop`` becomes ``stop_sequences``; the reply is a list of content blocks; ``stop_reason``
names differ; input tokens include prompt-cache reads and writes; errors carry a ``type``
(``overloaded_error`` → :class:`~broker.errors.ProviderOverloaded`, ``rate_limit_error`` → 429).
``seed`` has no Anthropic counterpart and is not sent; ``response_format`` and embeddings are
refused (Anthropic has neither), and a route of embeddings cannot name this provider.
"""

from __future__ import annotations

from typing import Any

import httpx

from broker.config import ProviderConfig
from broker.errors import ProviderBadRequest
from workers.providers.base import (
    ChatCall,
    ChatResponse,
    EmbeddingCall,
    EmbeddingResponse,
    JsonHttpProvider,
    json_body,
    split_system,
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


def messages_body(call: ChatCall) -> dict[str, Any]:
    system, conversation = split_system(call.messages)
    body: dict[str, Any] = {
        "model": call.model,
        "messages": [{"role": m["role"], "content": m["content"]} for m in conversation],
        "max_tokens": DEFAULT_MAX_TOKENS,
    }
    if system:
        body["system"] = "\n\n".join(system)
    params = call.params
    if params is None:
        return body
    if params.response_format is not None:
        raise ProviderBadRequest("anthropic: response_format is not supported by the Messages API")
    if params.max_tokens is not None:
        body["max_tokens"] = params.max_tokens
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.top_p is not None:
        body["top_p"] = params.top_p
    if params.stop is not None:
        body["stop_sequences"] = [params.stop] if isinstance(params.stop, str) else params.stop
    return body


def read_message(data: Any) -> ChatResponse:
    text = "".join(
        block.get("text", "") for block in data["content"] if block.get("type") == "text"
    )
    usage = data["usage"]
    input_tokens = (
        int(usage.get("input_tokens", 0))
        + int(usage.get("cache_creation_input_tokens") or 0)
        + int(usage.get("cache_read_input_tokens") or 0)
    )
    stop_reason = data.get("stop_reason") or "end_turn"
    return ChatResponse(
        text=text,
        finish_reason=FINISH_REASONS.get(stop_reason, stop_reason),
        input_tokens=input_tokens,
        output_tokens=int(usage.get("output_tokens", 0)),
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
        try:
            body = messages_body(call)
        except ProviderBadRequest as error:
            error.provider = self.name
            raise
        data = await self.post(self._url, body, self._headers)
        with transport_errors(self.name):
            return read_message(data)

    async def embed(self, call: EmbeddingCall) -> EmbeddingResponse:
        raise ProviderBadRequest("anthropic has no embeddings API", provider=self.name)
