"""What a process opens while a campaign runs, seen by an audit hook (PEP 578): every
connection (``socket.connect``), name lookup (``socket.getaddrinfo``), ``urllib`` request and
file open. Inside :func:`watching`, a connection or lookup to anything but the endpoints the
test allows, any ``urllib`` request, and an open of a forbidden path is recorded — and refused
(the hook raises ``PermissionError``), so a hostile input cannot reach the metadata address or
a canary even where headway would have let it.

An audit hook cannot be removed: one is installed per process, the first time it is needed, and
does nothing outside :func:`watching`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from broker.http_site import HttpSite

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost", "::ffff:127.0.0.1"})


@dataclass
class Watch:
    """The endpoints allowed (``(host, port)``; a port of None allows any port of the host)
    and the paths no one may open; what was tried anyway lands in ``seen``."""

    endpoints: set[tuple[str, int | None]] = field(default_factory=set)
    paths: tuple[str, ...] = ()
    seen: list[str] = field(default_factory=list)

    def allow(self, host: str, port: int | None) -> None:
        self.endpoints.add((host, port))

    def allowed(self, host: Any, port: Any) -> bool:
        host = str(host)
        hosts = LOOPBACK if host in LOOPBACK else {host}
        return any((h, port) in self.endpoints or (h, None) in self.endpoints for h in hosts)

    def event(self, name: str, args: tuple[Any, ...]) -> None:
        if name == "socket.connect":
            address = args[1]
            if isinstance(address, tuple) and len(address) >= 2:
                if not self.allowed(address[0], address[1]):
                    self._refuse(f"connect {address[0]}:{address[1]}")
            elif isinstance(address, (str, bytes)):
                self._refuse(f"connect {address!r}")
        elif name == "socket.getaddrinfo":
            host = args[0].decode() if isinstance(args[0], bytes) else args[0]
            port = int(args[1]) if isinstance(args[1], str) and args[1].isdigit() else args[1]
            if host is not None and not self.allowed(host, port):
                self._refuse(f"lookup {host}:{args[1]}")
        elif name == "urllib.Request":
            self._refuse(f"urllib {args[0]}")
        elif name == "open" and self.paths:
            path = args[0]
            if isinstance(path, bytes):
                path = path.decode(errors="replace")
            if isinstance(path, str) and any(path.startswith(p) for p in self.paths):
                self._refuse(f"open {path}")

    def _refuse(self, what: str) -> None:
        self.seen.append(what)
        raise PermissionError(f"the fuzz campaign refuses: {what}")


_active: list[Watch] = []
_installed = False


def _hook(name: str, args: tuple[Any, ...]) -> None:
    if _active and name in ("socket.connect", "socket.getaddrinfo", "urllib.Request", "open"):
        _active[-1].event(name, args)


@contextlib.contextmanager
def watching(
    endpoints: Iterable[tuple[str, int | None]] = (), paths: Iterable[str] = ()
) -> Iterator[Watch]:
    global _installed
    if not _installed:
        sys.addaudithook(_hook)
        _installed = True
    watch = Watch(set(endpoints), tuple(paths))
    _active.append(watch)
    try:
        yield watch
    finally:
        _active.remove(watch)


class Canary(HttpSite):
    """A loopback HTTP server no input may make headway call: it records every request and
    answers a secret (which must then appear in no result)."""

    SECRET = "CANARY-HTTP-SECRET"

    def __init__(self) -> None:
        super().__init__("127.0.0.1", 0)
        self.requests: list[str] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        return app

    async def _answer(self, request: web.Request) -> web.Response:
        self.requests.append(f"{request.method} {request.path_qs}")
        return web.json_response({"type": "string", "secret": self.SECRET})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/canary.json"
