"""The worker's httpx transport over aiohttp: real sockets, httpx objects in and out."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from broker.embedded import free_port
from broker.settings import HttpSettings
from workers.providers.http import ResponseTooLarge, create_http_client, post_json

pytestmark = pytest.mark.integration


@pytest.fixture
async def server() -> AsyncIterator[str]:
    calls = 0

    async def echo(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        reply = {
            "n": calls,
            "auth": request.headers.get("authorization"),
            "type": request.headers.get("content-type"),
            "body": await request.json(),
        }
        return web.json_response(reply, headers={"x-seen": "1"})

    async def gzipped(request: web.Request) -> web.Response:
        body = gzip.compress(json.dumps({"zipped": True}).encode())
        return web.Response(body=body, headers={"content-encoding": "gzip"})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    async def limited(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "slow down"}}, status=429)

    async def huge(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 300_000)

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # no content-length: the size shows as it arrives
        await response.prepare(request)
        for _ in range(30):
            await response.write(b"y" * 10_000)
        await response.write_eof()
        return response

    async def bomb(request: web.Request) -> web.Response:
        body = gzip.compress(b"\0" * 10_000_000)  # ~10 KB that inflate to 10 MB
        return web.Response(body=body, headers={"content-encoding": "gzip"})

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(20):  # a byte every 0.2 s: no read ever waits 1 s
            await response.write(b" ")
            await asyncio.sleep(0.2)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/huge", huge)
    app.router.add_post("/chunked", chunked)
    app.router.add_post("/bomb", bomb)
    app.router.add_post("/trickle", trickle)
    app.router.add_post("/echo", echo)
    app.router.add_post("/gzip", gzipped)
    app.router.add_post("/slow", slow)
    app.router.add_post("/limited", limited)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


TIMEOUT = httpx.Timeout(5.0, connect=1.0)


async def test_post_json_sends_headers_and_body_and_returns_the_read_answer(
    server: str,
) -> None:
    async with create_http_client(HttpSettings(8)) as client:
        reply = await post_json(
            client, httpx.URL(f"{server}/echo"), {"a": "ü"}, {"authorization": "Bearer k"}, TIMEOUT
        )
        again = await post_json(client, httpx.URL(f"{server}/echo"), {}, {}, TIMEOUT)
    assert reply.status_code == 200
    assert json.loads(reply.content) == {
        "n": 1,
        "auth": "Bearer k",
        "type": "application/json",
        "body": {"a": "ü"},
    }
    response = reply.response()  # httpx's, built when asked for
    assert isinstance(response, httpx.Response)
    assert response.headers["x-seen"] == "1" and response.json()["n"] == 1
    assert json.loads(again.content)["n"] == 2


async def test_post_json_through_any_other_transport_is_the_same_reply() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        return httpx.Response(201, json={"got": sent, "type": request.headers["content-type"]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        reply = await post_json(client, httpx.URL("http://p/x"), {"a": 1}, {}, TIMEOUT)
    assert reply.status_code == 201
    assert json.loads(reply.content) == {"got": {"a": 1}, "type": "application/json"}
    assert reply.response().json()["got"] == {"a": 1}


async def test_a_gzip_encoded_body_is_decoded(server: str) -> None:
    async with create_http_client(HttpSettings(8)) as client:
        reply = await post_json(client, httpx.URL(f"{server}/gzip"), {}, {}, TIMEOUT)
    assert json.loads(reply.content) == {"zipped": True}
    assert "content-encoding" not in reply.response().headers


async def test_error_statuses_are_replies_not_exceptions(server: str) -> None:
    async with create_http_client(HttpSettings(8)) as client:
        reply = await post_json(client, httpx.URL(f"{server}/limited"), {}, {}, TIMEOUT)
    assert reply.status_code == 429
    response = reply.response()
    assert response.json()["error"]["message"] == "slow down"
    assert response.request.url == httpx.URL(f"{server}/limited")


async def test_a_read_timeout_is_an_httpx_timeout(server: str) -> None:
    async with create_http_client(HttpSettings(8)) as client:
        with pytest.raises(httpx.TimeoutException):
            await post_json(
                client, httpx.URL(f"{server}/slow"), {}, {}, httpx.Timeout(0.2, connect=1.0)
            )


async def test_connection_refused_is_an_httpx_connect_error() -> None:
    async with create_http_client(HttpSettings(8)) as client:
        with pytest.raises(httpx.ConnectError):
            await post_json(client, httpx.URL(f"http://127.0.0.1:{free_port()}/x"), {}, {}, TIMEOUT)


async def test_a_closed_client_refuses_new_requests(server: str) -> None:
    client = create_http_client(HttpSettings(8))
    await post_json(client, httpx.URL(f"{server}/echo"), {}, {}, TIMEOUT)
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await post_json(client, httpx.URL(f"{server}/echo"), {}, {}, TIMEOUT)


@pytest.mark.parametrize("path", ["/huge", "/chunked", "/bomb"])
async def test_an_answer_larger_than_the_bound_is_refused_not_read_whole(
    server: str, path: str
) -> None:
    async with create_http_client(HttpSettings(8, max_response_bytes=100_000)) as client:
        with pytest.raises(ResponseTooLarge):
            await post_json(client, httpx.URL(server + path), {}, {}, TIMEOUT)


async def test_a_provider_trickling_bytes_is_cut_off_at_the_calls_timeout(server: str) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with create_http_client(HttpSettings(8)) as client:
        with pytest.raises(httpx.TimeoutException):
            await post_json(client, httpx.URL(server + "/trickle"), {}, {}, httpx.Timeout(1.0))
    assert loop.time() - started < 2.0  # not the 4 s the answer takes
