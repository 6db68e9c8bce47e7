"""One aiohttp application served on a loopback or public port while a context is open.

Shared by the worker's probes, ``headway docs`` and the provider simulator: subclasses
build ``app()``; port 0 picks a free port, read back from ``port`` once started.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from aiohttp import web


class HttpSite:
    backlog = 128  # pending connections the listening socket queues

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, backlog=self.backlog).start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
