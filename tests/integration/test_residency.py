"""Data residency over the real broker, real HTTP and a real ledger: a restricted tenant's job
is served in its region, and when the deployment in its region is down it waits there — it is
never failed over to a deployment outside; an unrestricted tenant's job fails over as usual."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from broker.client import HeadwayClient
from broker.config import parse_config
from broker.embedded import free_port
from broker.settings import Settings
from tests.helpers import chat_job, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer


async def test_a_restricted_job_never_fails_over_out_of_its_region(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: every call is refused
    config = parse_config(
        {
            "providers": {
                "sim": {"type": "simulator", "base_url": simulator.base_url},
                "down": {"type": "simulator", "base_url": closed},
            },
            "routes": {
                "eu-first": {
                    "kind": "chat",
                    "deployments": [
                        {"provider": "down", "model": "gpt-eu", "region": "eu-west"},
                        {"provider": "sim", "model": "gpt-us", "region": "us-east"},
                    ],
                },
                "both": {
                    "kind": "chat",
                    "deployments": [
                        {"provider": "sim", "model": "gpt-us", "region": "us-east"},
                        {"provider": "sim", "model": "gpt-eu-2", "region": "eu-west"},
                    ],
                },
            },
            "tenants": {"free": {}, "gdpr": {"allowed_regions": ["eu-west"]}},
        }
    )
    settings = make_settings(database_url=sqlite_url)
    async with running_worker(settings, config):
        async with HeadwayClient(settings) as client:
            await client.submit_many(
                [
                    chat_job("free-moves", tenant="free", route="eu-first"),
                    chat_job("gdpr-served", tenant="gdpr", route="both"),
                    chat_job("gdpr-waits", tenant="gdpr", route="eu-first"),
                ]
            )
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=2, timeout_s=60
        )
        await asyncio.sleep(2.0)  # the waiting job keeps trying eu-west meanwhile

    moved = results.by_key["free-moves"][0]
    served = results.by_key["gdpr-served"][0]
    assert (moved["status"], moved["deployment"], moved["region"]) == (
        "succeeded", "gpt-us", "us-east",
    )  # fmt: skip
    assert (served["deployment"], served["region"]) == ("gpt-eu-2", "eu-west")
    # it waits (parked) for eu-west, or fails there after its parks: it never succeeds elsewhere
    assert all(r["status"] != "succeeded" for r in results.by_key.get("gdpr-waits", []))
    assert simulator.stats.jobs["gdpr-waits"] == 0  # never sent to us-east
    assert simulator.stats.jobs["free-moves"] == 1
