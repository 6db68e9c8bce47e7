"""OpenAI wire format: ``/chat/completions`` and ``/embeddings`` (also the simulator's)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from broker.config import ProviderConfig
from workers.http import post_json
from workers.providers.base import (
    ChatCall,
    ChatResponse,
    EmbeddingCall,
    EmbeddingResponse,
    raise_for_status,
    transport_errors,
)

JOB_HEADER = "x-headway-job"


class OpenAIProvider:
    """Chat completions and embeddings over the OpenAI REST API."""

    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        client: httpx.AsyncClient,
        *,
        api_key: str | None = None,
        send_job_header: bool = False,
    ) -> None:
        self.name = name
        base_url = config.base_url.rstrip("/")
        self._urls = {
            path: httpx.URL(base_url + path) for path in ("/chat/completions", "/embeddings")
        }
        self._timeout = httpx.Timeout(config.timeout_s, connect=min(config.timeout_s, 10.0))
        self._client = client
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._send_job_header = send_job_header

    async def chat(self, call: ChatCall) -> ChatResponse:
        body: dict[str, Any] = {"model": call.model, "messages": call.messages}
        if call.params is not None:
            body.update(call.params.model_dump(exclude_none=True, exclude={"dimensions"}))
        data = await self._post("/chat/completions", body, call.job_id)
        with transport_errors(self.name):
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            return ChatResponse(
                text=choice["message"].get("content") or "",
                finish_reason=choice.get("finish_reason") or "stop",
                input_tokens=int(usage.get("prompt_tokens", 0)),
                output_tokens=int(usage.get("completion_tokens", 0)),
            )

    async def embed(self, call: EmbeddingCall) -> EmbeddingResponse:
        body: dict[str, Any] = {"model": call.model, "input": call.inputs}
        if call.dimensions is not None:
            body["dimensions"] = call.dimensions
        data = await self._post("/embeddings", body, call.job_id)
        with transport_errors(self.name):
            items = sorted(data["data"], key=lambda item: item["index"])
            if len(items) != len(call.inputs):
                raise ValueError(f"{len(items)} embeddings for {len(call.inputs)} inputs")
            usage = data.get("usage") or {}
            return EmbeddingResponse(
                embeddings=[list(item["embedding"]) for item in items],
                input_tokens=int(usage.get("prompt_tokens", 0)),
            )

    async def _post(self, path: str, body: dict[str, Any], job_id: str | None) -> Any:
        headers = self._headers
        if self._send_job_header and job_id:
            headers = {**headers, JOB_HEADER: job_id}
        with transport_errors(self.name):
            response = await post_json(self._client, self._urls[path], body, headers, self._timeout)
        raise_for_status(response, self.name)
        with transport_errors(self.name):
            return json.loads(response.content)
