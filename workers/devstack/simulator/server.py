"""A provider simulator speaking four wire formats at their providers' own paths.

| wire | paths (``base_url`` to configure) |
|---|---|
| OpenAI / OpenAI-compatible | ``/v1/chat/completions``, ``/v1/embeddings`` (``…/v1``) |
| Azure OpenAI | ``/openai/deployments/{name}/chat/completions`` and ``…/embeddings`` (root) |
| Anthropic | ``/v1/messages`` (root) |
| Gemini | ``/v1beta/models/{model}:generateContent`` and ``:batchEmbedContents`` (``…/v1beta``) |

Settable latency, error rate (and the status of injected errors: 500, 503, 529), an RPM limit
enforced with 429 + Retry-After in each provider's convention, and ``omit_usage`` for servers
that report no token counts. It counts every call, readable at ``GET /_sim/stats`` and
changeable at runtime with ``POST /_sim/config``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import json
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from broker.http_site import HttpSite
from workers.devstack.simulator import behaviour, wires
from workers.devstack.simulator.batches import BatchAPIs
from workers.devstack.simulator.wires import Failure

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclasses.dataclass
class SimulatorConfig:
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_rate: float = 0.0
    rpm: int | None = None
    seed: int | None = None
    error_status: int = 500  # 500 → server error; 503 / 529 → "overloaded" in each wire's words
    omit_usage: bool = False  # OpenAI wire: answer without ``usage``, like some compatible servers
    request_log: int = 10_000  # the latest request bodies kept for tests (GET /_sim/requests)
    batch_delay_s: float = 1.0  # how long a Batch API submission takes to complete


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
    # (wall-clock time, job id) of every call that named its job: when each job was called
    timeline: list[tuple[float, str]] = dataclasses.field(default_factory=list)
    in_flight: int = 0  # requests being answered right now
    batches: int = 0  # Batch API submissions (OpenAI batches, Anthropic message batches)
    batch_items: int = 0  # requests answered inside them

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["jobs"] = dict(self.jobs)
        del data["timeline"]
        return data


class SimulatorServer(HttpSite):
    """``async with SimulatorServer(SimulatorConfig(latency_ms=5)) as sim: sim.base_url``."""

    backlog = 4096  # load tests open thousands of connections at once

    def __init__(
        self, config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__(host, port)
        self.config = config or SimulatorConfig()
        self.stats = SimulatorStats()
        self._window: collections.deque[float] = collections.deque()
        # (path, job header, JSON body) of the latest requests that had a readable body
        self.requests: collections.deque[tuple[str, str | None, dict[str, Any]]] = (
            collections.deque(maxlen=self.config.request_log)
        )
        self._random = random.Random(self.config.seed)
        self.batch_apis = BatchAPIs(self)

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-wire base URL (``…/v1``)."""
        return f"{self.root_url}/v1"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._count])
        for path, handler in (
            ("/v1/chat/completions", wires.openai_chat),
            ("/v1/embeddings", wires.openai_embeddings),
            ("/openai/deployments/{deployment}/chat/completions", wires.azure_chat),
            ("/openai/deployments/{deployment}/embeddings", wires.azure_embeddings),
            ("/v1/messages", wires.anthropic_messages),
            ("/v1beta/models/{model_method}", wires.gemini_model_call),
        ):
            app.router.add_post(path, functools.partial(handler, self))
        app.router.add_get("/v1/models", self._models)
        self.batch_apis.routes(app)
        app.router.add_get("/_sim/stats", self._get_stats)
        app.router.add_get("/_sim/requests", self._get_requests)
        app.router.add_post("/_sim/config", self._set_config)
        app.router.add_post("/_sim/reset", self._reset)
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.stats.in_flight += 1
        try:
            return await handler(request)
        finally:
            self.stats.in_flight -= 1

    # -- the shared gate every call passes: rate limit, latency, injected errors --------------

    def _rate_limited(self) -> Failure | None:
        rpm = self.config.rpm
        if rpm is None:
            return None
        now = time.monotonic()
        while self._window and now - self._window[0] >= 60.0:
            self._window.popleft()
        if len(self._window) >= rpm:
            retry_after = max(1, math.ceil(60.0 - (now - self._window[0])))
            self.stats.rate_limited += 1
            return Failure(429, "rate_limited", f"Rate limit reached: {rpm} RPM", retry_after)
        self._window.append(now)
        return None

    async def gate(self, request: web.Request) -> tuple[dict[str, Any] | None, Failure | None]:
        """Count the call, apply the RPM limit, read the JSON body, wait, inject errors."""
        self.stats.calls += 1
        job = request.headers.get("x-headway-job")
        if job:
            self.stats.jobs[job] += 1
            self.stats.timeline.append((time.time(), job))
        limited = self._rate_limited()
        if limited is not None:
            return None, limited
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None, self.bad_request("We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return None, self.bad_request("The request body must be a JSON object.")
        self.requests.append((request.path, job, body))
        delay = behaviour.requested_latency_ms(body)
        if delay is None:
            delay = self.config.latency_ms + self._random.uniform(0, self.config.latency_jitter_ms)
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        if self.config.error_rate and self._random.random() < self.config.error_rate:
            self.stats.errors += 1
            status = self.config.error_status
            kind = "overloaded" if status in (503, 529) else "server_error"
            return None, Failure(status, kind, "The server had an error processing your request.")
        return body, None

    def bad_request(self, message: str) -> Failure:
        self.stats.bad_requests += 1
        return Failure(400, "bad_request", message)

    def count_chat(self, model: str, *, batch: bool = False) -> None:
        if batch:  # a Batch API item: not an online call
            self.stats.batch_items += 1
            return
        self.stats.chat_calls += 1
        self.stats.by_model[model] = self.stats.by_model.get(model, 0) + 1

    def count_embeddings(self, model: str, inputs: int, *, batch: bool = False) -> None:
        if batch:
            self.stats.batch_items += 1
            return
        self.stats.embedding_calls += 1
        self.stats.embedding_inputs += inputs
        self.stats.by_model[model] = self.stats.by_model.get(model, 0) + 1

    # -- endpoints ----------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": m, "object": "model"} for m in self.stats.by_model]}
        )

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_dict())

    async def _get_requests(self, request: web.Request) -> web.Response:
        """The logged requests, oldest first: ``[{"path", "job", "body"}, …]``."""
        return web.json_response(
            [{"path": path, "job": job, "body": body} for path, job, body in self.requests]
        )

    async def _set_config(self, request: web.Request) -> web.Response:
        changes = await request.json()
        for key, value in changes.items():
            if not hasattr(self.config, key):
                return wires.openai_error(Failure(400, "bad_request", f"unknown setting {key!r}"))
            setattr(self.config, key, value)
        return web.json_response(dataclasses.asdict(self.config))

    async def _reset(self, request: web.Request) -> web.Response:
        self.stats = SimulatorStats()
        self._window.clear()
        self.requests.clear()
        return web.json_response({"ok": True})
