"""An OpenAI-compatible simulator: ``/v1/chat/completions`` and ``/v1/embeddings``.

Settable latency, error rate and an RPM limit enforced with 429 + Retry-After; it counts every
call, readable at ``GET /_sim/stats`` and changeable at runtime with ``POST /_sim/config``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import math
import random
import time
import uuid
from types import TracebackType
from typing import Any

from aiohttp import web

from workers.simulator import behaviour


@dataclasses.dataclass
class SimulatorConfig:
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_rate: float = 0.0
    rpm: int | None = None
    seed: int | None = None


@dataclasses.dataclass
class SimulatorStats:
    calls: int = 0
    chat_calls: int = 0
    embedding_calls: int = 0
    embedding_inputs: int = 0
    rate_limited: int = 0
    errors: int = 0
    bad_requests: int = 0
    by_model: dict[str, int] = dataclasses.field(default_factory=dict)
    jobs: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["jobs"] = dict(self.jobs)
        return data


def _error(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    return web.json_response(body, status=status, headers=headers)


class SimulatorServer:
    """``async with SimulatorServer(SimulatorConfig(latency_ms=5)) as sim: sim.base_url``."""

    def __init__(
        self, config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or SimulatorConfig()
        self.stats = SimulatorStats()
        self.host = host
        self.port = port
        self._window: collections.deque[float] = collections.deque()
        self._random = random.Random(self.config.seed)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/_sim/stats", self._get_stats)
        app.router.add_post("/_sim/config", self._set_config)
        app.router.add_post("/_sim/reset", self._reset)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=4096)
        await site.start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- the shared gate every call passes: rate limit, latency, injected errors --------------

    def _rate_limited(self) -> web.Response | None:
        rpm = self.config.rpm
        if rpm is None:
            return None
        now = time.monotonic()
        while self._window and now - self._window[0] >= 60.0:
            self._window.popleft()
        if len(self._window) >= rpm:
            retry_after = max(1, math.ceil(60.0 - (now - self._window[0])))
            self.stats.rate_limited += 1
            headers = {
                "Retry-After": str(retry_after),
                "x-ratelimit-limit-requests": str(rpm),
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{retry_after}s",
            }
            return _error(429, f"Rate limit reached: {rpm} RPM", "rate_limit_exceeded", headers)
        self._window.append(now)
        return None

    async def _gate(
        self, request: web.Request
    ) -> tuple[dict[str, Any] | None, web.Response | None]:
        self.stats.calls += 1
        job = request.headers.get("x-headway-job")
        if job:
            self.stats.jobs[job] += 1
        limited = self._rate_limited()
        if limited is not None:
            return None, limited
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.stats.bad_requests += 1
            return None, _error(
                400, "We could not parse the JSON body of your request.", "invalid_request_error"
            )
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            self.stats.bad_requests += 1
            return None, _error(400, "you must provide a model parameter", "invalid_request_error")
        delay = behaviour.requested_latency_ms(body)
        if delay is None:
            delay = self.config.latency_ms + self._random.uniform(0, self.config.latency_jitter_ms)
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        if self.config.error_rate and self._random.random() < self.config.error_rate:
            self.stats.errors += 1
            return None, _error(
                500, "The server had an error processing your request.", "server_error"
            )
        self.stats.by_model[body["model"]] = self.stats.by_model.get(body["model"], 0) + 1
        return body, None

    # -- endpoints ----------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.Response:
        body, failure = await self._gate(request)
        if failure is not None or body is None:
            return failure or _error(400, "bad request", "invalid_request_error")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            self.stats.bad_requests += 1
            return _error(400, "'messages' must be a non-empty array", "invalid_request_error")
        self.stats.chat_calls += 1
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        text, out_tokens, finish = behaviour.completion(messages, max_tokens)
        in_tokens = behaviour.prompt_tokens(messages)
        return web.json_response(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": {
                    "prompt_tokens": in_tokens,
                    "completion_tokens": out_tokens,
                    "total_tokens": in_tokens + out_tokens,
                },
                "system_fingerprint": "fp_headway_sim",
            }
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        body, failure = await self._gate(request)
        if failure is not None or body is None:
            return failure or _error(400, "bad request", "invalid_request_error")
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(isinstance(i, str) for i in inputs)
        ):
            self.stats.bad_requests += 1
            return _error(
                400, "'input' must be a string or an array of strings", "invalid_request_error"
            )
        if len(inputs) > 2048:
            self.stats.bad_requests += 1
            return _error(400, "'input' has more than 2048 items", "invalid_request_error")
        self.stats.embedding_calls += 1
        self.stats.embedding_inputs += len(inputs)
        dimensions = int(body.get("dimensions") or behaviour.DEFAULT_EMBEDDING_DIMENSIONS)
        tokens = sum(behaviour.count_tokens(text) for text in inputs)
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "object": "embedding",
                        "index": i,
                        "embedding": behaviour.embedding(t, dimensions),
                    }
                    for i, t in enumerate(inputs)
                ],
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": m, "object": "model"} for m in self.stats.by_model]}
        )

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_dict())

    async def _set_config(self, request: web.Request) -> web.Response:
        changes = await request.json()
        for key, value in changes.items():
            if not hasattr(self.config, key):
                return _error(400, f"unknown simulator setting {key!r}", "invalid_request_error")
            setattr(self.config, key, value)
        return web.json_response(dataclasses.asdict(self.config))

    async def _reset(self, request: web.Request) -> web.Response:
        self.stats = SimulatorStats()
        self._window.clear()
        return web.json_response({"ok": True})
