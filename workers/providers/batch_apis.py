"""Clients of the providers' batch APIs: OpenAI (files + batches; Azure OpenAI speaks the same)
and Anthropic (message batches). One small protocol, the same error tree as online calls.

A batch is submitted once, polled until the provider says it ended, and its results are read
back per ``custom_id``. Each item's outcome is the reply (parsed exactly as the online reply),
a provider error (mapped as an online response with that status would be: 4xx permanent,
429/5xx retryable), or *expired* (the provider did not run it: batch expired or cancelled).
Result lines are read one at a time: a line whose answer cannot be read (garbled, its message
missing) is that item's ``ProviderResponseError``, never the whole file's; a line that names
no item (not JSON, no ``custom_id``) is skipped, so its item counts as not run.
Request lines are the online request bodies, so a job's batch and online requests match.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from broker.config import ProviderConfig
from broker.errors import (
    ProviderBadRequest,
    ProviderError,
    ProviderRateLimited,
    ProviderServerError,
)
from workers.providers import anthropic, openai
from workers.providers.base import (
    ChatCall,
    ChatResponse,
    EmbeddingCall,
    EmbeddingResponse,
    raise_for_status,
    transport_errors,
)
from workers.providers.http import BULK

log = logging.getLogger(__name__)

Call = ChatCall | EmbeddingCall
Reply = ChatResponse | EmbeddingResponse


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_requests: int
    max_bytes: int


OPENAI_LIMITS = BatchLimits(50_000, 200 * 1024 * 1024)
ANTHROPIC_LIMITS = BatchLimits(100_000, 256 * 1024 * 1024)


@dataclass(frozen=True, slots=True)
class Outcome:
    custom_id: str
    reply: Reply | None = None
    error: ProviderError | None = None
    expired: bool = False  # not run: try it online


@dataclass(frozen=True, slots=True)
class BatchState:
    ended: bool
    failed: str | None = None  # the whole batch was refused: why (its items are not run)


class BatchAPI(Protocol):
    name: str
    limits: BatchLimits

    def line(self, custom_id: str, call: Call) -> bytes: ...

    async def submit(self, lines: list[bytes], embeddings: bool) -> str: ...

    async def state(self, batch_id: str) -> BatchState: ...

    async def results(self, batch_id: str, calls: dict[str, Call]) -> list[Outcome]: ...


def _result_lines(provider: str, text: str) -> list[dict[str, Any]]:
    """The lines of a result file that name an item (a JSON object with a string
    ``custom_id``); any other line is logged and skipped."""
    lines: list[dict[str, Any]] = []
    skipped = 0
    for raw in text.splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except (ValueError, RecursionError):
            line = None
        if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
            lines.append(line)
        else:
            skipped += 1
    if skipped:
        log.warning("%s: %d result lines name no batch item (skipped)", provider, skipped)
    return lines


def _outcomes(
    provider: str,
    lines: list[dict[str, Any]],
    calls: dict[str, Call],
    read: Callable[[dict[str, Any], dict[str, Call]], Outcome],
) -> list[Outcome]:
    """Every call's outcome: its line read alone (an answer that cannot be read is its own
    ``ProviderResponseError``), or — no line for it — not run (``expired``)."""
    outcomes: dict[str, Outcome] = {}
    for line in lines:
        custom_id = line["custom_id"]
        if custom_id not in calls:
            continue
        try:
            with transport_errors(provider):
                outcomes[custom_id] = read(line, calls)
        except ProviderError as error:
            outcomes[custom_id] = Outcome(custom_id, error=error)
    # an item with no line was not run (the batch expired or was cancelled first)
    return [outcomes.get(cid) or Outcome(cid, expired=True) for cid in calls]


def _item_error(provider: str, status: int, message: str) -> ProviderError:
    if status == 429:
        return ProviderRateLimited(message, status_code=status, provider=provider)
    if status >= 500 or status == 408:
        return ProviderServerError(message, status_code=status, provider=provider)
    return ProviderBadRequest(message, status_code=status, provider=provider)


class _Http:
    def __init__(self, name: str, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.name = name
        self._client = client
        self._timeout = httpx.Timeout(config.timeout_s, connect=min(config.timeout_s, 10.0))

    async def send(
        self, method: str, url: str, headers: dict[str, str], **kwargs: Any
    ) -> httpx.Response:
        with transport_errors(self.name):
            response = await self._client.request(
                method,
                url,
                headers=headers,
                timeout=self._timeout,
                extensions={BULK: True},  # batch files: as large and slow as they are
                **kwargs,
            )
        raise_for_status(response, self.name)
        return response


def _multipart(jsonl: bytes) -> tuple[bytes, str]:
    """The ``/files`` upload as finished bytes and its content type: the aiohttp transport
    cannot send httpx's streamed multipart body."""
    request = httpx.Request(
        "POST",
        "http://upload.invalid",
        data={"purpose": "batch"},
        files={"file": ("headway-batch.jsonl", jsonl, "application/jsonl")},
    )
    return request.read(), request.headers["content-type"]


class OpenAIBatches(_Http):
    """``POST /files`` + ``POST /batches``; results from the output and error files."""

    limits = OPENAI_LIMITS

    def __init__(
        self, name: str, config: ProviderConfig, client: httpx.AsyncClient, api_key: str | None
    ) -> None:
        super().__init__(name, config, client)
        self._base = config.base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def line(self, custom_id: str, call: Call) -> bytes:
        if isinstance(call, ChatCall):
            url, body = "/v1/chat/completions", openai.chat_body(call, model=call.model)
        else:
            url, body = "/v1/embeddings", openai.embedding_body(call, model=call.model)
        item = {"custom_id": custom_id, "method": "POST", "url": url, "body": body}
        return json.dumps(item, separators=(",", ":")).encode() + b"\n"

    async def submit(self, lines: list[bytes], embeddings: bool) -> str:
        body, content_type = _multipart(b"".join(lines))
        headers = {**self._headers, "content-type": content_type}
        upload = await self.send("POST", f"{self._base}/files", headers, content=body)
        endpoint = "/v1/embeddings" if embeddings else "/v1/chat/completions"
        created = await self.send(
            "POST",
            f"{self._base}/batches",
            self._headers,
            json={
                "input_file_id": upload.json()["id"],
                "endpoint": endpoint,
                "completion_window": "24h",
            },
        )
        return str(created.json()["id"])

    async def _view(self, batch_id: str) -> dict[str, Any]:
        response = await self.send("GET", f"{self._base}/batches/{batch_id}", self._headers)
        view: dict[str, Any] = response.json()
        return view

    async def state(self, batch_id: str) -> BatchState:
        view = await self._view(batch_id)
        status = view.get("status")
        if status == "failed":
            errors = (view.get("errors") or {}).get("data") or [{}]
            return BatchState(True, str(errors[0].get("message") or "batch failed"))
        return BatchState(status in ("completed", "expired", "cancelled"))

    async def results(self, batch_id: str, calls: dict[str, Call]) -> list[Outcome]:
        view = await self._view(batch_id)
        lines: list[dict[str, Any]] = []
        for file_id in (view.get("output_file_id"), view.get("error_file_id")):
            if file_id:
                content = await self.send(
                    "GET", f"{self._base}/files/{file_id}/content", self._headers
                )
                lines += _result_lines(self.name, content.text)
        return _outcomes(self.name, lines, calls, self._outcome)

    def _outcome(self, line: dict[str, Any], calls: dict[str, Call]) -> Outcome:
        """One line (read inside ``transport_errors``: what cannot be read is unreadable)."""
        custom_id = line["custom_id"]
        response = line.get("response")
        if not response:
            return Outcome(custom_id, expired=True)  # batch_expired, batch_cancelled, …
        status, body = int(response.get("status_code", 500)), response.get("body") or {}
        if status != 200:
            message = str((body.get("error") or {}).get("message") or f"HTTP {status}")
            return Outcome(custom_id, error=_item_error(self.name, status, message))
        call = calls[custom_id]
        if isinstance(call, ChatCall):
            return Outcome(custom_id, reply=openai.read_chat(body, call))
        return Outcome(custom_id, reply=openai.read_embeddings(body, call))


class AnthropicBatches(_Http):
    """``POST /v1/messages/batches``; results from ``results_url``."""

    limits = ANTHROPIC_LIMITS

    def __init__(
        self, name: str, config: ProviderConfig, client: httpx.AsyncClient, api_key: str | None
    ) -> None:
        super().__init__(name, config, client)
        base = config.base_url.rstrip("/")
        self._url = base + ("/messages/batches" if base.endswith("/v1") else "/v1/messages/batches")
        self._headers = {"anthropic-version": config.api_version or anthropic.DEFAULT_API_VERSION}
        if api_key:
            self._headers["x-api-key"] = api_key

    def line(self, custom_id: str, call: Call) -> bytes:
        if not isinstance(call, ChatCall):
            raise ProviderBadRequest("anthropic has no embeddings API", provider=self.name)
        item = {"custom_id": custom_id, "params": anthropic.messages_body(call)}
        return json.dumps(item, separators=(",", ":")).encode()

    async def submit(self, lines: list[bytes], embeddings: bool) -> str:
        body = b'{"requests":[' + b",".join(lines) + b"]}"
        headers = {**self._headers, "content-type": "application/json"}
        created = await self.send("POST", self._url, headers, content=body)
        return str(created.json()["id"])

    async def _view(self, batch_id: str) -> dict[str, Any]:
        view: dict[str, Any] = (
            await self.send("GET", f"{self._url}/{batch_id}", self._headers)
        ).json()
        return view

    async def state(self, batch_id: str) -> BatchState:
        return BatchState((await self._view(batch_id)).get("processing_status") == "ended")

    async def results(self, batch_id: str, calls: dict[str, Call]) -> list[Outcome]:
        content = await self.send(
            "GET", self._results_url(await self._view(batch_id), batch_id), self._headers
        )
        return _outcomes(self.name, _result_lines(self.name, content.text), calls, self._outcome)

    def _results_url(self, view: dict[str, Any], batch_id: str) -> str:
        """The view's ``results_url`` when it is on the deployment's own origin (scheme, host,
        port); else this batch's results path there: the provider's word never sends the API
        key to another host, nor the worker to another address."""
        own = f"{self._url}/{batch_id}/results"
        named = view.get("results_url")
        if not isinstance(named, str) or not named:
            return own
        try:
            elsewhere = _origin(httpx.URL(named)) != _origin(httpx.URL(self._url))
        except httpx.InvalidURL:
            elsewhere = True
        if elsewhere:
            log.warning("%s: batch %s names results off its origin (ignored)", self.name, batch_id)
            return own
        return named

    def _outcome(self, line: dict[str, Any], calls: dict[str, Call]) -> Outcome:
        """One line (read inside ``transport_errors``: what cannot be read is unreadable)."""
        custom_id, result = line["custom_id"], line.get("result") or {}
        kind = result.get("type")
        if kind == "succeeded":
            call = calls[custom_id]
            forced = isinstance(call, ChatCall) and anthropic.forced(call)
            return Outcome(custom_id, reply=anthropic.read_message(result["message"], forced))
        if kind == "errored":
            error = (result.get("error") or {}).get("error") or {}
            status = 400 if error.get("type") == "invalid_request_error" else 500
            return Outcome(
                custom_id, error=_item_error(self.name, status, str(error.get("message")))
            )
        return Outcome(custom_id, expired=True)  # expired, canceled


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port
