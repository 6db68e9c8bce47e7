"""The HTTP transport of alert webhooks: resolve the host, check every address, connect to
the checked ones.

A check followed by a connection that resolves the name again can be raced (DNS rebinding: the
name answers a public address to the check and 169.254.169.254 to the connection). Here the
request that leaves is addressed to the very IP address that was checked; its ``Host`` header
stays the name's, and over TLS the name is still the one sent (SNI) and verified against the
certificate (httpcore's ``sni_hostname``); an address that does not connect is followed by
the next one resolved (an IPv6 answer on a host without IPv6). A request carrying the
:data:`ALLOW_PRIVATE` extension (a tenant whose operator allows private receivers) skips the
check, never the pinning. Redirects are the client's to follow, and the webhook client follows
none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from workers.admission.webhooks.addresses import checked, resolve

#: a request extension: this request may reach addresses in the refused ranges
ALLOW_PRIVATE = "headway.allow_private"
DEFAULT_PORTS = {"http": 80, "https": 443}

Resolve = Callable[[str, int], Awaitable[list[str]]]


class PinnedTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, resolver: Resolve = resolve) -> None:
        self._inner = inner
        self._resolve = resolver

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.host
        port = url.port or DEFAULT_PORTS.get(url.scheme, 80)
        extensions = dict(request.extensions)
        allowed = bool(extensions.pop(ALLOW_PRIVATE, False))
        addresses = await self._resolve(host, port)
        if not (allowed and addresses):
            addresses = checked(host, addresses)
        if url.scheme == "https":
            extensions.setdefault("sni_hostname", host)
        unreached: httpx.ConnectError | None = None
        for address in addresses:  # in the resolver's order, as a connection by name would
            pinned = httpx.Request(
                request.method,
                url.copy_with(host=address),
                headers=request.headers,  # Host: the name's, as the client set it
                stream=request.stream,
                extensions=extensions,
            )
            try:
                return await self._inner.handle_async_request(pinned)
            except httpx.ConnectError as error:  # not connected: nothing was sent
                unreached = error
        assert unreached is not None  # checked() refuses an empty answer
        raise unreached

    async def aclose(self) -> None:
        await self._inner.aclose()


def webhook_client(resolver: Resolve = resolve) -> httpx.AsyncClient:
    """The client alert webhooks are POSTed with: pinned addresses, no redirects, no
    environment proxies (a proxy would connect to the name itself), and no connection kept
    for a next request (pooled by address, a connection opened for one tenant's name could
    carry another tenant's request)."""
    inner = httpx.AsyncHTTPTransport(retries=0, limits=httpx.Limits(max_keepalive_connections=0))
    return httpx.AsyncClient(
        transport=PinnedTransport(inner, resolver),
        follow_redirects=False,
        trust_env=False,
    )
