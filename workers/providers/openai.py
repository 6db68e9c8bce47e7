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
from broker.errors import ProviderContentFiltered
from schemas.results import Choice, ToolCallOut
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


#: parameters headway honours itself, never sent (embeddings are always asked for as floats:
#: results carry numbers, exports encode base64 when the job asked for it)
NOT_SENT: set[str] = {"dimensions", "encoding_format"}


def chat_body(call: ChatCall, *, model: str | None = None) -> dict[str, Any]:
    """Messages and parameters as they are: this is their native shape."""
    body: dict[str, Any] = {"messages": call.messages}
    if model is not None:
        body["model"] = model
    if call.params is not None:
        body.update(call.params.model_dump(exclude_none=True, exclude=NOT_SENT))
    return body


def embedding_body(call: EmbeddingCall, *, model: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"input": call.inputs}
    if model is not None:
        body["model"] = model
    if call.dimensions is not None:
        body["dimensions"] = call.dimensions
    if call.user is not None:
        body["user"] = call.user
    return body


def read_choice(choice: dict[str, Any], index: int) -> Choice:
    message = choice["message"]
    calls = message.get("tool_calls")
    return Choice(
        index=index,
        text=message.get("content") or "",
        finish_reason=choice.get("finish_reason") or "stop",
        tool_calls=[ToolCallOut.model_validate(c) for c in calls] if calls else None,
        refusal=message.get("refusal"),
        logprobs=choice.get("logprobs"),
    )


def _text_only(choice: dict[str, Any]) -> bool:
    message = choice["message"]
    return (
        not message.get("tool_calls")
        and message.get("refusal") is None
        and choice.get("logprobs") is None
        and choice.get("finish_reason") != "content_filter"
    )


def _text_reply(choice: dict[str, Any], data: dict[str, Any], call: ChatCall) -> ChatResponse:
    text = choice["message"].get("content") or ""
    finish = choice.get("finish_reason") or "stop"
    fingerprint = data.get("system_fingerprint")
    fingerprint = fingerprint if isinstance(fingerprint, str) else None
    usage = data.get("usage")
    if usage is None:
        return ChatResponse(
            text=text,
            finish_reason=finish,
            input_tokens=tokens.chat_input(call.messages, call.params),
            output_tokens=tokens.text_tokens(text) if text else 0,
            estimated=True,
            system_fingerprint=fingerprint,
        )
    return ChatResponse(
        text=text,
        finish_reason=finish,
        input_tokens=int(usage.get("prompt_tokens", 0)),
        output_tokens=int(usage.get("completion_tokens", 0)),
        system_fingerprint=fingerprint,
    )


def read_chat(data: Any, call: ChatCall) -> ChatResponse:
    """The reply; a missing ``usage`` (some compatible servers) is estimated and marked so."""
    raw = data["choices"]
    wanted = (call.params.n if call.params else None) or 1
    if len(raw) != wanted:
        raise ValueError(f"{len(raw)} choices for n = {wanted}")
    if wanted == 1 and _text_only(raw[0]):  # the common case: no models beyond the response
        return _text_reply(raw[0], data, call)
    choices = [read_choice(choice, index) for index, choice in enumerate(raw)]
    first = choices[0]
    if first.finish_reason == "content_filter":  # Azure's filter, or a compatible server's
        raise ProviderContentFiltered("the provider's content filter stopped the answer")
    usage = data.get("usage")
    if usage is None:
        produced = "".join(
            c.text + "".join(t.function.arguments for t in c.tool_calls or ()) for c in choices
        )
        input_tokens = tokens.chat_input(call.messages, call.params)
        output_tokens, estimated = (tokens.text_tokens(produced) if produced else 0), True
    else:
        input_tokens = int(usage.get("prompt_tokens", 0))
        output_tokens, estimated = int(usage.get("completion_tokens", 0)), False
    fingerprint = data.get("system_fingerprint")
    return ChatResponse(
        text=first.text,
        finish_reason=first.finish_reason,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        estimated=estimated,
        tool_calls=first.tool_calls,
        refusal=first.refusal,
        logprobs=first.logprobs,
        choices=choices if wanted > 1 else None,
        system_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
    )


def read_embeddings(data: Any, call: EmbeddingCall) -> EmbeddingResponse:
    items = sorted(data["data"], key=lambda item: item["index"])
    if len(items) != len(call.inputs):
        raise ValueError(f"{len(items)} embeddings for {len(call.inputs)} inputs")
    embeddings = [list(item["embedding"]) for item in items]
    usage = data.get("usage")
    if usage is None:
        estimate = tokens.inputs_tokens(call.inputs)
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
