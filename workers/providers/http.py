"""The one shared ``httpx.AsyncClient`` of a worker process, and its transport.

Transport chosen by measurement (DEVELOPERS.md): httpx's own pool fell to 35 req/s at 1,000
concurrent requests on this hardware; httpx over ``httpx-aiohttp``'s AiohttpTransport kept
1.2k–1.8k, but still cost ~80 µs of CPU per call more than aiohttp itself (241 vs 160 µs,
``docs/performance.md``). :class:`AiohttpTransport` here is that transport cut to what a provider
call needs: the body read in one piece (no stream wrappers), parsed URLs and timeouts reused,
no cookie jar. The API stays httpx — the client, its transports, ``httpx.Response`` for an
error status, httpx's exceptions (aiohttp's become httpx's at this one boundary) — while a
provider call through this transport (:func:`post_json`) builds httpx's request and response
objects only when an error needs them.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Sequence
from typing import Any, TypeGuard

import aiohttp
import httpx
import yarl

from broker.settings import HttpSettings

_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    # most specific first
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.TimeoutException),
    (asyncio.TimeoutError, httpx.TimeoutException),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientError, httpx.TransportError),
)


RawHeaders = Sequence[tuple[bytes, bytes]]
DEFAULT_MAX_RESPONSE_BYTES = HttpSettings.max_response_bytes
#: a request extension: a bulk transfer (a provider Batch API's files) has neither the response
#: bound nor the whole-call deadline of a call, only the per-read timeout
BULK = "headway.bulk"
READ_CHUNK = 256 * 1024


class ResponseTooLarge(httpx.DecodingError):
    """A provider's answer exceeds the largest body a worker reads (a permanent error)."""


#: compressed answers are inflated here, bounded like the body itself (a small gzip body may
#: inflate to gigabytes); zlib's wbits for each
_INFLATE = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    inflater = zlib.decompressobj(_INFLATE[encoding])
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise httpx.DecodingError(f"the answer is not valid {encoding}: {error}") from error
    if len(data) > limit or inflater.unconsumed_tail:
        raise ResponseTooLarge(f"the answer inflates past {limit:,} bytes, the most read")
    return data


def _as_httpx_error(error: BaseException) -> httpx.TransportError | None:
    for source, target in _ERRORS:
        if isinstance(error, source):
            return target(f"{type(error).__name__}: {error}")
    return None


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport over one ``aiohttp.ClientSession`` (created in the running loop)."""

    def __init__(
        self,
        max_connections: int,
        keepalive_s: float = 30.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._max_connections = max_connections
        self._max_response_bytes = max_response_bytes
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, yarl.URL] = {}
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}
        self._closed = False

    def _open_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("transport is closed")
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            keepalive_timeout=self._keepalive_s,
            ttl_dns_cache=300,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # httpx decodes content-encoding when it reads the body
            timeout=aiohttp.ClientTimeout(total=None),
        )
        return self._session

    def _url(self, url: httpx.URL) -> yarl.URL:
        text = str(url)
        parsed = self._urls.get(text)
        if parsed is None:
            parsed = yarl.URL(text, encoded=True)
            if len(self._urls) < 1024:  # provider endpoints: a handful, reused forever
                self._urls[text] = parsed
        return parsed

    def _timeout(self, extensions: dict[str, Any]) -> aiohttp.ClientTimeout:
        spec = extensions.get("timeout") or {}
        bulk = bool(extensions.get(BULK))
        key = (spec.get("connect"), spec.get("read"), spec.get("pool"), bulk)
        timeout = self._timeouts.get(key)
        if timeout is None:
            connect, read, pool, _ = key
            # the read timeout bounds the whole call too: a provider trickling bytes must not
            # hold a call open past it (a non-streamed answer arrives in one piece anyway)
            timeout = aiohttp.ClientTimeout(
                total=None if bulk else read, sock_connect=connect, sock_read=read, connect=pool
            )
            self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        status, body, raw_headers = await self.send(
            request.method,
            request.url,
            request.headers.multi_items(),
            request.content,
            request.extensions,
        )
        return httpx.Response(
            status,
            headers=raw_headers,
            content=body,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def send(
        self,
        method: str,
        url: httpx.URL,
        headers: list[tuple[str, str]],
        content: bytes,
        extensions: dict[str, Any],
    ) -> tuple[int, bytes, RawHeaders]:
        """One request, its whole (bounded, inflated) body read: (status, body, headers).
        aiohttp's errors leave as httpx's."""
        session = self._session or self._open_session()
        try:
            async with session.request(
                method,
                self._url(url),
                headers=headers,
                data=content or None,
                allow_redirects=False,
                timeout=self._timeout(extensions),
            ) as response:
                bulk = bool(extensions.get(BULK))
                body = await self._read(response, None if bulk else self._max_response_bytes)
                raw_headers: RawHeaders = response.raw_headers
                encoding = response.headers.get("content-encoding", "").strip().lower()
                if encoding in _INFLATE and not bulk:
                    body = _inflate(body, encoding, self._max_response_bytes)
                    raw_headers = tuple(
                        (name, value)
                        for name, value in raw_headers
                        if name.lower() not in (b"content-encoding", b"content-length")
                    )
                return response.status, body, raw_headers
        except httpx.DecodingError:
            raise
        except Exception as error:
            mapped = _as_httpx_error(error)
            if mapped is None:
                raise
            raise mapped from error

    async def _read(self, response: aiohttp.ClientResponse, limit: int | None) -> bytes:
        """The whole body, refused past ``limit`` bytes (checked as it arrives)."""
        length = response.content_length
        if limit is None or (length is not None and length <= limit):
            return await response.read()
        if length is not None:
            raise ResponseTooLarge(f"the answer is {length:,} bytes; at most {limit:,} are read")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(READ_CHUNK):
            size += len(chunk)
            if size > limit:
                raise ResponseTooLarge(f"the answer exceeds {limit:,} bytes, the most read")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


def create_http_client(settings: HttpSettings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=AiohttpTransport(
            settings.max_connections, max_response_bytes=settings.max_response_bytes
        ),
        # only what the transport inflates within the response bound
        headers={"accept-encoding": "gzip, deflate"},
        timeout=httpx.Timeout(60.0, connect=10.0),
        follow_redirects=False,
    )


def _direct(transport: httpx.AsyncBaseTransport) -> TypeGuard[AiohttpTransport]:
    """Whether ``transport`` is the worker's own, as built: not a test's, and not wrapped by
    OpenTelemetry's httpx instrumentation (which patches ``handle_async_request`` on the
    instance to make each call's client span — that path must run for the span to exist)."""
    return type(transport) is AiohttpTransport and "handle_async_request" not in vars(transport)


class JsonReply:
    """A provider's answer to :func:`post_json`: its status and body, and — built only when a
    caller asks, as an error status's handling does — the ``httpx.Response``."""

    __slots__ = ("_headers", "_response", "_url", "content", "status_code")

    def __init__(
        self,
        status_code: int,
        content: bytes,
        headers: RawHeaders,
        url: httpx.URL,
        response: httpx.Response | None = None,
    ) -> None:
        self.status_code = status_code
        self.content = content
        self._headers = headers
        self._url = url
        self._response = response

    def response(self) -> httpx.Response:
        if self._response is None:
            self._response = httpx.Response(
                self.status_code,
                headers=self._headers,
                content=self.content,
                request=httpx.Request("POST", self._url),
            )
        return self._response


async def post_json(
    client: httpx.AsyncClient,
    url: httpx.URL,
    body: dict[str, Any],
    headers: dict[str, str],
    timeout: httpx.Timeout,  # noqa: ASYNC109 - httpx's per-request timeouts, passed through
) -> JsonReply:
    """POST ``body`` as JSON through the client's transport; the response body is read.

    This skips what an API client does not use of httpx's request pipeline — cookie
    extraction, auth flows, redirect handling, URL merging — which cost ~100 µs of CPU per call
    here (218 vs 332 µs per request, measured against the simulator). Through the worker's own
    :class:`AiohttpTransport` it skips building httpx's Request and Response too (another
    ~120 µs: 297 vs 171 µs for aiohttp alone, docs/performance.md) until an error status needs
    the Response; any other transport (a test's ``MockTransport``), and this one once tracing
    instruments it, is called as httpx calls it. ``url`` is a parsed ``httpx.URL`` built once
    per endpoint (parsing it costs ~12 µs a call).
    """
    content = json.dumps(body, ensure_ascii=False).encode()
    sent = {**headers, "content-type": "application/json"}
    extensions = {"timeout": timeout.as_dict()}
    transport = client._transport
    if _direct(transport):
        status, data, raw = await transport.send("POST", url, [*sent.items()], content, extensions)
        return JsonReply(status, data, raw, url)
    request = httpx.Request("POST", url, headers=sent, content=content, extensions=extensions)
    response = await transport.handle_async_request(request)
    try:
        await response.aread()
    finally:
        await response.aclose()
    return JsonReply(response.status_code, response.content, (), url, response)
