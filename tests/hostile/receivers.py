"""A webhook receiver on the loopback address, for the alert-webhook specs: each path answers
after its own delay with its own status (a script of them), and every request is recorded —
when it arrived, its headers and body."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

from broker.embedded import free_port


@dataclass(frozen=True)
class Received:
    path: str
    at: float  # time.monotonic() on arrival
    headers: dict[str, str]
    body: bytes


@dataclass
class Behaviour:
    delay_s: float = 0.0
    statuses: Iterator[int] = field(default_factory=lambda: iter(()))  # then 200
    location: str | None = None  # a redirect's target


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.behaviours: dict[str, Behaviour] = {}
        self.arrived = asyncio.Event()  # set by the first request
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def _hook(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        self.received.append(
            Received(path, time.monotonic(), dict(request.headers), await request.read())
        )
        self.arrived.set()
        behaviour = self.behaviours.get(path, Behaviour())
        if behaviour.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), behaviour.delay_s)
        status = next(behaviour.statuses, 200)
        headers = {"location": behaviour.location} if behaviour.location else None
        return web.Response(status=status, headers=headers)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{path}", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._closing.set()  # delayed answers end now
        assert self._runner is not None
        await self._runner.cleanup()
