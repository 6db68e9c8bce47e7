"""The OpenAI adapter speaks the wire format and maps every failure into the error tree."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from broker.config import ProviderConfig
from broker.errors import (
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderRateLimited,
    ProviderResponseError,
    ProviderServerError,
    ProviderTimeout,
)
from schemas.jobs import Params
from workers.providers.base import ChatCall, EmbeddingCall, parse_retry_after
from workers.providers.openai import OpenAIProvider

CONFIG = ProviderConfig(type="openai", base_url="https://api.example/v1/")
CHAT_OK = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
}


def provider(handler: Callable[[httpx.Request], httpx.Response]) -> OpenAIProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return OpenAIProvider("openai", CONFIG, client, api_key="sk-test")


async def test_chat_sends_model_messages_params_and_key() -> None:
    seen: dict[str, object] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["auth"] = request.headers["authorization"]
        seen["body"] = json.loads(request.content)
        return httpx.Response(200, json=CHAT_OK)

    params = Params(max_tokens=5, temperature=0, seed=3, response_format={"type": "json_object"})
    response = await provider(handler).chat(
        ChatCall("gpt-4o-mini", [{"role": "user", "content": "x"}], params)
    )
    assert seen["url"] == "https://api.example/v1/chat/completions"
    assert seen["auth"] == "Bearer sk-test"
    assert seen["body"] == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 5,
        "temperature": 0.0,
        "seed": 3,
        "response_format": {"type": "json_object"},
    }
    assert (
        response.text,
        response.finish_reason,
        response.input_tokens,
        response.output_tokens,
    ) == ("Hi!", "stop", 9, 3)


async def test_embeddings_come_back_in_input_order_with_dimensions_sent() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body == {"model": "e", "input": ["a", "b"], "dimensions": 2}
        data = [
            {"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
            {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]},
        ]
        return httpx.Response(
            200,
            json={"object": "list", "data": data, "usage": {"prompt_tokens": 4, "total_tokens": 4}},
        )

    response = await provider(handler).embed(EmbeddingCall("e", ["a", "b"], 2))
    assert response.embeddings == [[1.0, 0.0], [0.0, 1.0]]
    assert response.input_tokens == 4


def openai_error(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("response", "error_type", "retryable"),
    [
        (openai_error(400, "bad messages", "invalid_request_error"), ProviderBadRequest, False),
        (
            openai_error(401, "Incorrect API key provided", "invalid_request_error"),
            ProviderAuthError,
            False,
        ),
        (
            openai_error(404, "The model does not exist", "invalid_request_error"),
            ProviderBadRequest,
            False,
        ),
        (
            openai_error(429, "Rate limit reached", "requests", {"retry-after": "7"}),
            ProviderRateLimited,
            True,
        ),
        (openai_error(500, "The server had an error", "server_error"), ProviderServerError, True),
        (openai_error(503, "overloaded", "server_error"), ProviderServerError, True),
        (httpx.Response(502, text="<html>bad gateway</html>"), ProviderServerError, True),
        (httpx.Response(200, text="not json"), ProviderResponseError, False),
        (httpx.Response(200, json={"choices": []}), ProviderResponseError, False),
    ],
)
async def test_failures_map_into_the_tree_with_the_providers_message(
    response: httpx.Response, error_type: type[Exception], retryable: bool
) -> None:
    with pytest.raises(error_type) as caught:
        await provider(lambda _: response).chat(ChatCall("m", [{"role": "user", "content": "x"}]))
    assert caught.value.retryable is retryable  # type: ignore[attr-defined]
    if response.status_code >= 400 and "error" in response.text:
        assert json.loads(response.text)["error"]["message"] in str(caught.value)


async def test_429_carries_retry_after() -> None:
    response = openai_error(429, "slow down", "requests", {"retry-after-ms": "1500"})
    with pytest.raises(ProviderRateLimited) as caught:
        await provider(lambda _: response).chat(ChatCall("m", []))
    assert caught.value.retry_after == 1.5


@pytest.mark.parametrize(
    ("exception", "error_type"),
    [
        (httpx.ReadTimeout("slow"), ProviderTimeout),
        (httpx.ConnectTimeout("slow"), ProviderTimeout),
        (httpx.ConnectError("refused"), ProviderConnectionError),
        (httpx.RemoteProtocolError("reset"), ProviderConnectionError),
    ],
)
async def test_transport_errors_are_retryable(
    exception: Exception, error_type: type[Exception]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exception

    with pytest.raises(error_type) as caught:
        await provider(handler).chat(ChatCall("m", []))
    assert caught.value.retryable  # type: ignore[attr-defined]


def test_retry_after_reads_seconds_milliseconds_and_http_dates() -> None:
    assert parse_retry_after(httpx.Headers({"retry-after": "3"})) == 3.0
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    assert parse_retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert parse_retry_after(httpx.Headers({})) is None


MALFORMED = {
    "negative tokens": {**CHAT_OK, "usage": {"prompt_tokens": -5, "completion_tokens": 3}},
    "absurd tokens": {**CHAT_OK, "usage": {"prompt_tokens": 10**20, "completion_tokens": 3}},
    "content not a string": {
        **CHAT_OK,
        "choices": [{"message": {"content": {"x": 1}}, "finish_reason": "stop"}],
    },
    "finish reason not a string": {
        **CHAT_OK,
        "choices": [{"message": {"content": "x"}, "finish_reason": 7}],
    },
    "no choices": {**CHAT_OK, "choices": []},
    "not an object": [1, 2],
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_answer_is_a_provider_response_error(body: object) -> None:
    openai = provider(lambda request: httpx.Response(200, json=body))
    with pytest.raises(ProviderResponseError, match="unreadable response"):
        await openai.chat(ChatCall("gpt-4o-mini", [{"role": "user", "content": "hi"}]))


@pytest.mark.parametrize("vector", [[0.1, "0.2"], [0.1, None], [1e308, 1e308], "0.1"], ids=str)
async def test_an_embedding_that_is_not_finite_numbers_is_a_provider_response_error(
    vector: object,
) -> None:
    body = {"data": [{"index": 0, "embedding": vector}], "usage": {"prompt_tokens": 2}}
    openai = provider(lambda request: httpx.Response(200, json=body))
    with pytest.raises(ProviderResponseError):
        await openai.embed(EmbeddingCall("text-embedding-3-small", ["hi"]))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1e12", 3600.0),
        ("-4", 0.0),
        ("nan", None),
        ("inf", 3600.0),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 3600.0),
    ],
)
def test_retry_after_is_bounded(value: str, expected: float | None) -> None:
    assert parse_retry_after(httpx.Headers({"retry-after": value})) == expected


async def test_a_provider_error_echoing_a_credential_is_redacted_at_the_boundary() -> None:
    echo = {"error": {"message": "Incorrect API key provided: Bearer sk-live-0123456789abcdef"}}
    openai = provider(lambda request: httpx.Response(401, json=echo))
    with pytest.raises(ProviderAuthError) as raised:
        await openai.chat(ChatCall("gpt-4o-mini", [{"role": "user", "content": "hi"}]))
    assert "sk-live" not in str(raised.value) and "[REDACTED]" in str(raised.value)
