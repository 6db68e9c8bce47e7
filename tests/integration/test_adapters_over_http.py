"""Every adapter over real HTTP against the simulator speaking its provider's wire format:
success with usage, each error class, and Retry-After in that provider's convention."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from broker.config import ProviderConfig
from broker.embedded import free_port
from broker.errors import (
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderOverloaded,
    ProviderRateLimited,
    ProviderServerError,
)
from broker.settings import HttpSettings
from schemas.jobs import Params
from workers.devstack.simulator import SimulatorServer
from workers.providers.base import ChatCall, EmbeddingCall, Provider
from workers.providers.http import create_http_client
from workers.providers.registry import build_provider

pytestmark = pytest.mark.integration

WIRES = ["openai", "openai_compatible", "azure_openai", "anthropic", "gemini"]
EMBEDDING_WIRES = ["openai", "openai_compatible", "azure_openai", "gemini"]
CHAT = ChatCall(
    "model-a",
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Summarise: the quick brown fox jumps over the lazy dog."},
    ],
    Params(max_tokens=40, temperature=0, stop=["\n\n"]),
)


def base_url(sim: SimulatorServer, wire: str) -> str:
    if wire in ("openai", "openai_compatible"):
        return sim.base_url
    if wire == "gemini":
        return f"{sim.root_url}/v1beta"
    return sim.root_url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with create_http_client(HttpSettings(64)) as client:
        yield client


def adapter(sim: SimulatorServer, wire: str, http: httpx.AsyncClient) -> Provider:
    config = ProviderConfig(type=wire, base_url=base_url(sim, wire), api_version=None)  # type: ignore[arg-type]
    return build_provider(wire, config, http)


@pytest.mark.parametrize("wire", WIRES)
async def test_chat_succeeds_with_text_finish_reason_and_usage(
    wire: str, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    reply = await adapter(simulator, wire, http).chat(CHAT)
    assert reply.text.startswith("Summary[")
    assert reply.finish_reason == "stop"
    assert reply.input_tokens > 10 and reply.output_tokens > 0
    assert reply.estimated is False
    assert simulator.stats.chat_calls == 1
    assert simulator.stats.by_model == {"model-a": 1}


@pytest.mark.parametrize("wire", WIRES)
async def test_max_tokens_reached_reads_as_length(
    wire: str, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    call = ChatCall("m", [{"role": "user", "content": "word " * 200}], Params(max_tokens=3))
    reply = await adapter(simulator, wire, http).chat(call)
    assert reply.finish_reason == "length"
    assert reply.output_tokens <= 3


@pytest.mark.parametrize("wire", EMBEDDING_WIRES)
async def test_embeddings_come_back_in_input_order_with_requested_dimensions(
    wire: str, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    provider = adapter(simulator, wire, http)
    reply = await provider.embed(EmbeddingCall("embed-a", ["alpha", "beta", "gamma"], 8))
    single = await provider.embed(EmbeddingCall("embed-a", ["beta"], 8))
    assert len(reply.embeddings) == 3 and all(len(v) == 8 for v in reply.embeddings)
    assert reply.embeddings[1] == single.embeddings[0]
    assert reply.input_tokens > 0
    assert reply.estimated is (wire == "gemini")  # Gemini reports no token counts


async def test_anthropic_refuses_embeddings(
    simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    provider = adapter(simulator, "anthropic", http)
    with pytest.raises(ProviderBadRequest, match="no embeddings"):
        await provider.embed(EmbeddingCall("e", ["x"]))
    assert simulator.stats.calls == 0


async def test_a_server_without_usage_gets_an_estimate_marked_as_such(
    simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    simulator.config.omit_usage = True
    provider = adapter(simulator, "openai_compatible", http)
    chat = await provider.chat(CHAT)
    embedded = await provider.embed(EmbeddingCall("e", ["some text to embed"]))
    assert chat.estimated and chat.input_tokens > 10 and chat.output_tokens > 0
    assert embedded.estimated and embedded.input_tokens > 0


@pytest.mark.parametrize("wire", WIRES)
async def test_rate_limit_is_retryable_with_the_providers_retry_after(
    wire: str, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    simulator.config.rpm = 1
    provider = adapter(simulator, wire, http)
    await provider.chat(CHAT)
    with pytest.raises(ProviderRateLimited) as limited:
        await provider.chat(CHAT)
    assert limited.value.retryable
    assert limited.value.status_code == 429
    assert limited.value.retry_after is not None and 1 <= limited.value.retry_after <= 60
    assert limited.value.provider == wire


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize(
    ("status", "error"), [(500, ProviderServerError), (529, ProviderOverloaded)]
)
async def test_server_errors_and_overload_are_retryable(
    wire: str,
    status: int,
    error: type[Exception],
    simulator: SimulatorServer,
    http: httpx.AsyncClient,
) -> None:
    simulator.config.error_rate = 1.0
    simulator.config.error_status = status
    with pytest.raises(ProviderServerError) as failed:
        await adapter(simulator, wire, http).chat(CHAT)
    assert type(failed.value) is error
    assert failed.value.retryable


@pytest.mark.parametrize("wire", WIRES)
async def test_a_rejected_request_is_a_permanent_error_with_the_providers_message(
    wire: str, simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    call = ChatCall("m", [{"role": "user", "content": "please sim:reject this"}])
    with pytest.raises(ProviderBadRequest, match="rejected content") as rejected:
        await adapter(simulator, wire, http).chat(call)
    assert not rejected.value.retryable
    assert rejected.value.status_code == 400


@pytest.mark.parametrize("wire", WIRES)
async def test_a_refused_connection_is_retryable(wire: str, http: httpx.AsyncClient) -> None:
    config = ProviderConfig(type=wire, base_url=f"http://127.0.0.1:{free_port()}/v1")  # type: ignore[arg-type]
    with pytest.raises(ProviderConnectionError) as refused:
        await build_provider(wire, config, http).chat(CHAT)
    assert refused.value.retryable


async def test_azure_sends_the_api_version_and_deployment_in_the_url(
    simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    config = ProviderConfig(
        type="azure_openai", base_url=simulator.root_url, api_version="2024-06-01"
    )  # type: ignore[arg-type]
    await build_provider("azure", config, http).chat(ChatCall("my-gpt4o-deployment", CHAT.messages))
    assert simulator.stats.by_model == {"my-gpt4o-deployment": 1}
