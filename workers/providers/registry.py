"""Build one Provider per ``[providers.NAME]`` entry, all sharing one httpx client."""

from __future__ import annotations

import httpx

from broker.config import HeadwayConfig, ProviderConfig, ProviderType
from broker.errors import ConfigError
from workers.providers.base import Provider
from workers.providers.openai import OpenAIProvider

_OPENAI_WIRE = {ProviderType.OPENAI, ProviderType.OPENAI_COMPATIBLE, ProviderType.SIMULATOR}


def build_provider(name: str, config: ProviderConfig, client: httpx.AsyncClient) -> Provider:
    api_key = config.api_key()
    if config.api_key_env and api_key is None:
        raise ConfigError(
            f"providers.{name}.api_key_env: environment variable {config.api_key_env} is not set"
        )
    if config.type in _OPENAI_WIRE:
        return OpenAIProvider(
            name,
            config,
            client,
            api_key=api_key,
            send_job_header=config.type is ProviderType.SIMULATOR,
        )
    raise ConfigError(
        f"providers.{name}.type: {config.type.value!r} has no adapter in this version"
    )


def build_providers(config: HeadwayConfig, client: httpx.AsyncClient) -> dict[str, Provider]:
    used = {d.provider for route in config.routes.values() for d in route.deployments}
    return {
        name: build_provider(name, p, client)
        for name, p in config.providers.items()
        if name in used
    }
