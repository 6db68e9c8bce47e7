"""Build one Provider per ``[providers.NAME]`` entry, all sharing one httpx client — and,
for providers a ``batch = true`` deployment uses, their Batch-API clients."""

from __future__ import annotations

import httpx

from broker.config import HeadwayConfig, ProviderConfig, ProviderType
from broker.errors import ConfigError
from workers.providers.anthropic import AnthropicProvider
from workers.providers.azure import AzureOpenAIProvider
from workers.providers.base import Provider
from workers.providers.batch_apis import AnthropicBatches, BatchAPI, OpenAIBatches
from workers.providers.gemini import GeminiProvider
from workers.providers.openai import OpenAIProvider


def _api_key(name: str, config: ProviderConfig) -> str | None:
    api_key = config.api_key()
    if config.api_key_env and api_key is None:
        raise ConfigError(
            f"providers.{name}.api_key_env: environment variable {config.api_key_env} is not set"
        )
    return api_key


def build_provider(name: str, config: ProviderConfig, client: httpx.AsyncClient) -> Provider:
    api_key = _api_key(name, config)
    kind = config.type
    if kind is ProviderType.ANTHROPIC:
        return AnthropicProvider(name, config, client, api_key=api_key)
    if kind is ProviderType.GEMINI:
        return GeminiProvider(name, config, client, api_key=api_key)
    if kind is ProviderType.AZURE_OPENAI:
        return AzureOpenAIProvider(name, config, client, api_key=api_key)
    return OpenAIProvider(
        name,
        config,
        client,
        api_key=api_key,
        send_job_header=kind is ProviderType.SIMULATOR,
    )


def build_providers(config: HeadwayConfig, client: httpx.AsyncClient) -> dict[str, Provider]:
    used = {d.provider for route in config.routes.values() for d in route.deployments}
    return {
        name: build_provider(name, p, client)
        for name, p in config.providers.items()
        if name in used
    }


def build_batch_apis(config: HeadwayConfig, client: httpx.AsyncClient) -> dict[str, BatchAPI]:
    """The Batch-API client of every provider that a ``batch = true`` deployment uses."""
    used = {d.provider for route in config.routes.values() for d in route.deployments if d.batch}
    apis: dict[str, BatchAPI] = {}
    for name in sorted(used):
        provider = config.providers[name]
        api_key = _api_key(name, provider)
        if provider.type is ProviderType.ANTHROPIC:
            apis[name] = AnthropicBatches(name, provider, client, api_key)
        else:  # OpenAI and the simulator (config validation allows no others)
            apis[name] = OpenAIBatches(name, provider, client, api_key)
    return apis
