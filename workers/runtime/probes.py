"""The worker's HTTP port (``HEADWAY_HTTP_PORT``): ``/healthz``, ``/readyz``, ``/metrics``.

``/healthz`` answers 200 while the process serves HTTP at all (liveness); ``/readyz`` answers
200 when the ledger and Kafka are reachable and the worker is not draining, else 503, with the
checks as JSON either way (readiness: take it out of rotation, do not restart it).
"""

from __future__ import annotations

from aiohttp import web

from broker.http_site import HttpSite
from workers.runtime.readiness import Readiness
from workers.telemetry.metrics import CONTENT_TYPE, Metrics


class ProbeServer(HttpSite):
    """``async with ProbeServer(readiness, port) as probes: probes.port``."""

    def __init__(
        self,
        readiness: Readiness,
        port: int,
        host: str = "0.0.0.0",
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(host, port)
        self.readiness = readiness
        self.metrics = metrics

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self.metrics is not None:
            app.router.add_get("/metrics", self._metrics)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _metrics(self, request: web.Request) -> web.Response:
        assert self.metrics is not None
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _readyz(self, request: web.Request) -> web.Response:
        report = self.readiness.report()
        return web.json_response(report, status=200 if report["ready"] else 503)
