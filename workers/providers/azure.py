"""Azure OpenAI: OpenAI's bodies at per-deployment URLs with ``api-version`` and ``api-key``.

``base_url`` is the resource endpoint (``https://RESOURCE.openai.azure.com``); a deployment's
``model`` in the config is the Azure *deployment name*, which is what the URL carries:
``{base_url}/openai/deployments/{model}/chat/completions?api-version=…``.
"""

from __future__ import annotations

import httpx

from broker.config import ProviderConfig
from workers.providers.base import (
    ChatCall,
    ChatResponse,
    EmbeddingCall,
    EmbeddingResponse,
    JsonHttpProvider,
    transport_errors,
)
from workers.providers.openai import chat_body, embedding_body, read_chat, read_embeddings

DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAIProvider(JsonHttpProvider):
    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        client: httpx.AsyncClient,
        *,
        api_key: str | None = None,
    ) -> None:
        super().__init__(name, config, client)
        self._base = config.base_url.rstrip("/")
        self._api_version = config.api_version or DEFAULT_API_VERSION
        self._headers = {"api-key": api_key} if api_key else {}
        self._urls: dict[tuple[str, str], httpx.URL] = {}

    def _url(self, deployment: str, operation: str) -> httpx.URL:
        url = self._urls.get((deployment, operation))
        if url is None:
            url = httpx.URL(
                f"{self._base}/openai/deployments/{deployment}/{operation}",
                params={"api-version": self._api_version},
            )
            self._urls[(deployment, operation)] = url
        return url

    async def chat(self, call: ChatCall) -> ChatResponse:
        url = self._url(call.model, "chat/completions")
        data = await self.post(url, chat_body(call), self._headers)
        with transport_errors(self.name):
            return read_chat(data, call)

    async def embed(self, call: EmbeddingCall) -> EmbeddingResponse:
        url = self._url(call.model, "embeddings")
        data = await self.post(url, embedding_body(call), self._headers)
        with transport_errors(self.name):
            return read_embeddings(data, call)
