"""The embedded stack of ``headway demo`` / ``dev``: Tansu + the simulator + topics + ledger."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from broker.admin import create_topics
from broker.config import HeadwayConfig, load_config
from broker.embedded import EmbeddedKafka, free_port
from broker.settings import Settings
from workers.devstack.simulator.run import simulator_process
from workers.ledger.database.engine import upgrade


@dataclass(frozen=True)
class Stack:
    settings: Settings
    config: HeadwayConfig
    simulator_url: str


@contextlib.asynccontextmanager
async def embedded_stack(
    settings: Settings,
    *,
    simulator_latency_ms: float = 0,
    simulator_jitter_ms: float = 0,
) -> AsyncIterator[Stack]:
    """Start what is missing: the broker unless a bootstrap is set; always the simulator."""
    async with contextlib.AsyncExitStack() as stack:
        if not settings.kafka_bootstrap:
            kafka = await stack.enter_async_context(EmbeddedKafka())
            settings = settings.model_copy(
                update={"kafka_bootstrap": kafka.bootstrap, "enable_idempotence": False}
            )
        simulator_url = stack.enter_context(
            simulator_process(
                free_port(), latency_ms=simulator_latency_ms, jitter_ms=simulator_jitter_ms
            )
        )
        config = load_config(settings.config, simulator_url=simulator_url)
        await upgrade(settings.database_url)
        await create_topics(settings, config)
        yield Stack(settings, config, simulator_url)
