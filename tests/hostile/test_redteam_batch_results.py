"""Red-team specs on provider Batch-API answers: a batch's ``results_url`` (Anthropic's view
names where its results are) is the provider's word, so it is followed only on the deployment's
own origin — a view naming another host had the worker GET it with the deployment's API key
(``x-api-key``): the key sent to a third host, a connection to any address the worker reaches
(``http://169.254.169.254/...``)."""

from __future__ import annotations

import json

import httpx
import pytest

from broker.config import ProviderConfig, ProviderType
from workers.providers.base import ChatCall
from workers.providers.batch_apis import AnthropicBatches

CALL = ChatCall(model="m", messages=[{"role": "user", "content": "hi"}], params=None)
RESULT = {
    "custom_id": "good",
    "result": {
        "type": "succeeded",
        "message": {
            "content": [{"type": "text", "text": "fine"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 1},
        },
    },
}


@pytest.mark.parametrize(
    "elsewhere",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://collector.example/steal",
        "http://provider.invalid:8443/v1/messages/batches/b1/results",  # another port
        "https://provider.invalid/v1/messages/batches/b1/results",  # another scheme
    ],
)
async def test_a_results_url_off_the_deployments_origin_is_never_requested(
    elsewhere: str,
) -> None:
    asked: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        if request.url.path.endswith("/results"):
            return httpx.Response(200, text=json.dumps(RESULT))
        return httpx.Response(200, json={"id": "b1", "results_url": elsewhere})

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    config = ProviderConfig(type=ProviderType.ANTHROPIC, base_url="http://provider.invalid")
    api = AnthropicBatches("p", config, client, "sk-ant-secret")

    outcomes = await api.results("b1", {"good": CALL})

    hosts = {(r.url.scheme, r.url.host, r.url.port) for r in asked}
    assert hosts == {("http", "provider.invalid", None)}, hosts
    assert [str(r.url) for r in asked][-1] == (
        "http://provider.invalid/v1/messages/batches/b1/results"
    )
    assert outcomes[0].reply is not None and outcomes[0].reply.text == "fine"


async def test_a_results_url_on_the_deployments_origin_is_followed() -> None:
    asked: list[str] = []
    own = "http://provider.invalid/v1/messages/batches/b1/results?page=1"

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        if request.url.path.endswith("/results"):
            return httpx.Response(200, text=json.dumps(RESULT))
        return httpx.Response(200, json={"id": "b1", "results_url": own})

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    config = ProviderConfig(type=ProviderType.ANTHROPIC, base_url="http://provider.invalid/v1")
    api = AnthropicBatches("p", config, client, None)

    await api.results("b1", {"good": CALL})

    assert asked[-1] == own
