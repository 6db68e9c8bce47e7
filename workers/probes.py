"""The worker's HTTP port (``HEADWAY_HTTP_PORT``): ``/healthz``, ``/readyz``, ``/metrics``.

``/healthz`` answers 200 while the process serves HTTP at all (liveness); ``/readyz`` answers
200 when the ledger and Kafka are reachable and the worker is not draining, else 503, with the
checks as JSON either way (readiness: take it out of rotation, do not restart it).
"""

from __future__ import annotations

from types import TracebackType

from aiohttp import web

from workers.metrics import CONTENT_TYPE, Metrics
from workers.readiness import Readiness


class ProbeServer:
    """``async with ProbeServer(readiness, port) as probes: probes.port``."""

    def __init__(
        self,
        readiness: Readiness,
        port: int,
        host: str = "0.0.0.0",
        metrics: Metrics | None = None,
    ) -> None:
        self.readiness = readiness
        self.metrics = metrics
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self.metrics is not None:
            app.router.add_get("/metrics", self._metrics)
        return app

    async def __aenter__(self) -> ProbeServer:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        if self.port == 0:
            self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _metrics(self, request: web.Request) -> web.Response:
        assert self.metrics is not None
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _readyz(self, request: web.Request) -> web.Response:
        report = self.readiness.report()
        return web.json_response(report, status=200 if report["ready"] else 503)
