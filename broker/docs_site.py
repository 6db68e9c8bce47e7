"""``headway docs``: the AsyncAPI document of this deployment's topics, served over HTTP.

``/`` is the AsyncAPI viewer page (FastStream's; the browser loads the viewer's script from
its CDN), ``/asyncapi.yaml`` and ``/asyncapi.json`` the document itself, for the topic prefix
of the settings given (the committed ``docs/asyncapi.yaml`` is the default prefix's).
"""

from __future__ import annotations

import json

import yaml
from aiohttp import web
from faststream.specification.asyncapi.site import get_asyncapi_html

from broker.asyncapi import specification
from broker.http_site import HttpSite
from broker.settings import Settings


class DocsSite(HttpSite):
    """``async with DocsSite(settings, port=8000) as site: site.url``."""

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
        super().__init__(host, port)
        self.spec = specification(settings)
        self.document = self.spec.to_jsonable()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/asyncapi.yaml", self._yaml)
        app.router.add_get("/asyncapi.json", self._json)
        return app

    async def _page(self, request: web.Request) -> web.Response:
        html = get_asyncapi_html(self.spec, try_it_out_path=None)
        return web.Response(text=html, content_type="text/html")

    async def _yaml(self, request: web.Request) -> web.Response:
        text = yaml.safe_dump(self.document, sort_keys=True, allow_unicode=True, width=100)
        return web.Response(text=text, content_type="application/yaml")

    async def _json(self, request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self.document), content_type="application/json")
