"""Google Gemini API: ``models/{model}:generateContent`` and ``:batchEmbedContents``.

``base_url`` is the API root with its version (``DEFAULT_BASE_URL``); the key travels in
``x-goog-api-key``. Mapped: roles (``assistant`` → ``model``; system messages →
``systemInstruction``), parameters into ``generationConfig`` (``response_format`` → JSON MIME
type and schema), ``finishReason`` names, ``usageMetadata`` (thinking tokens are billed as
output), a prompt blocked by safety filters (a 200 without candidates → permanent error), and
errors in the ``google.rpc.Status`` shape, where a 429's wait is in a ``RetryInfo`` detail
(``"retryDelay": "30s"``). Embedding responses carry no token counts: they are estimated and
marked so.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from broker.config import ProviderConfig
from broker.errors import ProviderBadRequest
from workers.calls import tokens
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


def generate_body(call: ChatCall) -> dict[str, Any]:
    system, conversation = split_system(call.messages)
    body: dict[str, Any] = {
        "contents": [
            {
                "role": "model" if m["role"] == "assistant" else "user",
                "parts": [{"text": m["content"]}],
            }
            for m in conversation
        ]
    }
    if system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    config = generation_config(call)
    if config:
        body["generationConfig"] = config
    return body


def generation_config(call: ChatCall) -> dict[str, Any]:
    params = call.params
    if params is None:
        return {}
    config: dict[str, Any] = {}
    if params.max_tokens is not None:
        config["maxOutputTokens"] = params.max_tokens
    if params.temperature is not None:
        config["temperature"] = params.temperature
    if params.top_p is not None:
        config["topP"] = params.top_p
    if params.stop is not None:
        config["stopSequences"] = [params.stop] if isinstance(params.stop, str) else params.stop
    if params.seed is not None:
        config["seed"] = params.seed
    response_format = params.response_format or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema is not None:
            config["responseJsonSchema"] = schema
    return config


def read_generation(data: Any) -> ChatResponse:
    candidates = data.get("candidates") or []
    if not candidates:
        reason = (data.get("promptFeedback") or {}).get("blockReason", "no candidates")
        raise ProviderBadRequest(f"gemini returned no output: prompt blocked ({reason})")
    candidate = candidates[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(part.get("text", "") for part in parts if not part.get("thought"))
    usage = data.get("usageMetadata") or {}
    reason = candidate.get("finishReason") or "STOP"
    return ChatResponse(
        text=text,
        finish_reason=FINISH_REASONS.get(reason, reason.lower()),
        input_tokens=int(usage.get("promptTokenCount", 0)),
        output_tokens=int(usage.get("candidatesTokenCount", 0))
        + int(usage.get("thoughtsTokenCount", 0)),
    )


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
        data = await self.post(url, generate_body(call), self._headers)
        try:
            with transport_errors(self.name):
                return read_generation(data)
        except ProviderBadRequest as error:
            error.provider = self.name
            raise

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
        estimate = tokens.input_tokens(None, call.inputs)
        return EmbeddingResponse(embeddings=embeddings, input_tokens=estimate, estimated=True)
