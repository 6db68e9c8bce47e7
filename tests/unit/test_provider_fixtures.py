"""Every adapter reads the response and error bodies its provider's API reference documents.

Each file under ``tests/fixtures/providers/<type>/`` is a recorded status, headers and body with
its source and what the adapter must make of it (``expect``): the output and usage, or the class
of the mapped error, its ``retry_after`` and a piece of the provider's own message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import broker.errors
from broker.config import ProviderConfig
from broker.errors import ProviderError
from workers.providers.base import ChatCall, EmbeddingCall
from workers.providers.registry import build_provider

FIXTURES = Path(__file__).parents[1] / "fixtures" / "providers"
BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "openai_compatible": "http://localhost:11434/v1",
    "azure_openai": "https://example-resource.openai.azure.com",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}
CASES = sorted(FIXTURES.glob("*/*.json"))
RECORDED = {path: json.loads(path.read_text()) for path in CASES}


def replay(fixture: dict[str, Any]) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(fixture["status"], headers=fixture["headers"], json=fixture["body"])

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
async def test_adapter_maps_the_documented_response(path: Path) -> None:
    fixture = RECORDED[path]
    expect = fixture["expect"]
    kind = path.parent.name
    config = ProviderConfig(type=kind, base_url=BASE_URLS[kind])  # type: ignore[arg-type]
    provider = build_provider(kind, config, replay(fixture))
    if "embed" in path.stem:
        call = provider.embed(EmbeddingCall("model-x", ["first text", "second text"][: _n(expect)]))
    else:
        call = provider.chat(ChatCall("model-x", [{"role": "user", "content": "Hello there"}]))  # type: ignore[assignment]

    if "error" in expect:
        error_class = getattr(broker.errors, expect["error"])
        with pytest.raises(ProviderError) as raised:
            await call
        assert type(raised.value) is error_class, raised.value
        assert expect["message_contains"] in str(raised.value)
        assert raised.value.provider == kind
        if "retry_after" in expect:
            assert raised.value.retry_after == pytest.approx(expect["retry_after"], abs=0.01)
        return

    response = await call
    for field in ("text", "finish_reason", "input_tokens", "output_tokens", "embeddings"):
        if field in expect:
            assert getattr(response, field) == expect[field], field
    if "tool_calls" in expect:
        assert response.tool_calls is not None
        assert [c.model_dump() for c in response.tool_calls] == expect["tool_calls"]
    assert response.estimated is expect.get("estimated", False)
    if response.estimated:
        assert response.input_tokens > 0


def _n(expect: dict[str, Any]) -> int:
    return len(expect.get("embeddings", [[]]))


def test_every_provider_type_has_recorded_fixtures() -> None:
    recorded = {path.parent.name for path in CASES}
    assert recorded == set(BASE_URLS)
