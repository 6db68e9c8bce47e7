"""OpenAI wire format: ``/chat/completions`` and ``/embeddings``.

Served by OpenAI itself (``type = "openai"``), by any OpenAI-compatible server — vLLM, Ollama,
Mistral, Together, Groq… (``openai_compatible``: the key is optional) — and by the bundled
simulator. A missing ``usage``, which some compatible servers send, is estimated and marked
so. Azure OpenAI shares the bodies (``providers/azure.py``).
"""

from __future__ import annotations

from typing import Any

import httpx

from broker.config import ProviderConfig
from workers.calls import tokens
from workers.providers.base import (
    ChatCall,
    ChatResponse,
    EmbeddingCall,
    EmbeddingResponse,
    JsonHttpProvider,
    transport_errors,
)

JOB_HEADER = "x-headway-job"


def chat_body(call: ChatCall, *, model: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": call.messages}
    if model is not None:
        body["model"] = model
    if call.params is not None:
        body.update(call.params.model_dump(exclude_none=True, exclude={"dimensions"}))
    return body


def embedding_body(call: EmbeddingCall, *, model: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"input": call.inputs}
    if model is not None:
        body["model"] = model
    if call.dimensions is not None:
        body["dimensions"] = call.dimensions
    return body


def read_chat(data: Any, call: ChatCall) -> ChatResponse:
    """The reply; a missing ``usage`` (some compatible servers) is estimated and marked so."""
    choice = data["choices"][0]
    text = choice["message"].get("content") or ""
    usage = data.get("usage")
    if usage is None:
        return ChatResponse(
            text=text,
            finish_reason=choice.get("finish_reason") or "stop",
            input_tokens=tokens.message_tokens(call.messages),
            output_tokens=tokens.text_tokens(text) if text else 0,
            estimated=True,
        )
    return ChatResponse(
        text=text,
        finish_reason=choice.get("finish_reason") or "stop",
        input_tokens=int(usage.get("prompt_tokens", 0)),
        output_tokens=int(usage.get("completion_tokens", 0)),
    )


def read_embeddings(data: Any, call: EmbeddingCall) -> EmbeddingResponse:
    items = sorted(data["data"], key=lambda item: item["index"])
    if len(items) != len(call.inputs):
        raise ValueError(f"{len(items)} embeddings for {len(call.inputs)} inputs")
    embeddings = [list(item["embedding"]) for item in items]
    usage = data.get("usage")
    if usage is None:
        estimate = tokens.input_tokens(None, call.inputs)
        return EmbeddingResponse(embeddings=embeddings, input_tokens=estimate, estimated=True)
    return EmbeddingResponse(embeddings=embeddings, input_tokens=int(usage.get("prompt_tokens", 0)))


class OpenAIProvider(JsonHttpProvider):
    """Chat completions and embeddings over the OpenAI REST API (or a compatible server)."""

    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        client: httpx.AsyncClient,
        *,
        api_key: str | None = None,
        send_job_header: bool = False,
    ) -> None:
        super().__init__(name, config, client)
        base_url = config.base_url.rstrip("/")
        self._chat_url = httpx.URL(base_url + "/chat/completions")
        self._embeddings_url = httpx.URL(base_url + "/embeddings")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._send_job_header = send_job_header

    async def chat(self, call: ChatCall) -> ChatResponse:
        body = chat_body(call, model=call.model)
        data = await self.post(self._chat_url, body, self._job_headers(call.job_id))
        with transport_errors(self.name):
            return read_chat(data, call)

    async def embed(self, call: EmbeddingCall) -> EmbeddingResponse:
        body = embedding_body(call, model=call.model)
        data = await self.post(self._embeddings_url, body, self._job_headers(call.job_id))
        with transport_errors(self.name):
            return read_embeddings(data, call)

    def _job_headers(self, job_id: str | None) -> dict[str, str]:
        if self._send_job_header and job_id:
            return {**self._headers, JOB_HEADER: job_id}
        return self._headers
