"""Data residency holds on the coalescing path too (issue 33 §9).

Identical cacheable requests in flight in one worker are coalesced: the first calls, the others
are served its answer. An ``eu-west``-only job that joined an unrestricted job's flight used to
be handed the answer made in ``us-east`` (``region: us-east``, ``cached: true``). The rule of
stored entries applies to answers in flight: a job is served only an answer made in a region
it may go to — it joins only the flights of jobs held to the same regions, and an answer made
elsewhere is never served (it calls inside its regions instead). On fakes, and over the real
broker with the simulator serving two deployments in two regions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from broker.client import HeadwayClient
from broker.config import parse_config
from broker.settings import Settings
from schemas.jobs import JobRequest
from tests.helpers import chat_job, eventually, read_topic, running_worker
from tests.unit.test_residency import calls, harness, run
from workers.devstack.simulator import SimulatorServer
from workers.ledger.cache_rows import CacheEntry
from workers.pipeline.response_cache import normalise, served_from

DETERMINISTIC = {"temperature": 0, "max_tokens": 20}
SAME = [{"role": "user", "content": "the same question"}]


async def test_an_answer_in_flight_made_outside_a_jobs_regions_is_not_handed_to_it() -> None:
    built = harness(us=(0.3,))  # us-east answers after 0.3 s: the flight stays open

    leader = asyncio.create_task(
        run(built, "a", tenant="free", route="shared", messages=SAME, params=DETERMINISTIC)
    )
    await asyncio.sleep(0.05)
    restricted = await run(
        built, "b", tenant="gdpr", route="shared", messages=SAME, params=DETERMINISTIC
    )
    first = await leader

    assert first is not None and first["region"] == "us-east" and not first["cached"]
    assert restricted is not None and restricted["status"] == "succeeded"
    assert restricted["region"] == "eu-west" and not restricted["cached"]
    assert (calls(built, "us"), calls(built, "eu")) == (1, 1)


async def test_jobs_held_to_the_same_regions_still_share_one_call() -> None:
    built = harness(eu=(0.3,))
    jobs = [
        run(built, f"g{i}", tenant="gdpr", route="shared", messages=SAME, params=DETERMINISTIC)
        for i in range(3)
    ]
    results = await asyncio.gather(*jobs)
    unrestricted = await asyncio.gather(
        *(run(built, f"f{i}", tenant="free", route="us-first", messages=SAME) for i in range(2))
    )

    assert all(r is not None and r["region"] == "eu-west" for r in results)
    assert sorted(bool(r["cached"]) for r in results if r is not None) == [False, True, True]
    assert calls(built, "eu") == 1
    assert all(r is not None and r["status"] == "succeeded" for r in unrestricted)


def test_an_answer_from_a_deployment_outside_the_regions_is_not_served() -> None:
    """The rule itself: whatever flight a job joined, an answer is served only when the
    deployment that made it is in a region the job may go to."""
    built = harness()
    route = built.pipeline.config.routes["shared"]
    job = JobRequest.model_validate(
        chat_job("x", tenant="gdpr", route="shared", messages=SAME, params=DETERMINISTIC)
    )
    request = normalise(job, route, SAME)
    assert request is not None
    us_answer = CacheEntry(
        scope=request.scope,
        key=request.key(route.deployments[0]),
        provider="us",
        deployment="gpt-us",
        output_json='{"text": "made in us-east", "finish_reason": "stop"}',
        input_tokens=1,
        output_tokens=1,
        created_at=0.0,
        expires_at=1e12,
    )
    assert served_from(us_answer, route, frozenset({"eu-west"})) is None
    served = served_from(us_answer, route, None)
    assert served is not None and served.served_by is not None
    assert served.served_by.deployment.region == "us-east"


async def test_a_restricted_job_is_never_served_an_answer_in_flight_elsewhere_over_a_broker(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    config = parse_config(
        {
            "providers": {"sim": {"type": "simulator", "base_url": simulator.base_url}},
            "routes": {
                "shared": {
                    "kind": "chat",
                    "deployments": [
                        {"provider": "sim", "model": "gpt-us", "region": "us-east"},
                        {"provider": "sim", "model": "gpt-eu", "region": "eu-west"},
                    ],
                    "cache": {"ttl_s": 600, "scope": "global"},
                }
            },
            "tenants": {"free": {}, "gdpr": {"allowed_regions": ["eu-west"]}},
        }
    )
    slow_same: list[dict[str, Any]] = [
        {"role": "user", "content": "sim:latency_ms=3000 the same question"}
    ]

    def job(job_id: str, tenant: str) -> dict[str, Any]:
        return chat_job(
            job_id, tenant=tenant, route="shared", messages=slow_same, params=DETERMINISTIC
        )

    settings = make_settings(database_url=sqlite_url, job_partitions=1)
    async with running_worker(settings, config), HeadwayClient(settings) as client:
        await client.submit(job("unrestricted", "free"))
        assert await eventually(lambda: simulator.stats.in_flight == 1)  # its call is open
        await client.submit(job("restricted", "gdpr"))
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=2, timeout_s=60
        )
    [unrestricted] = results.by_key["unrestricted"]
    [restricted] = results.by_key["restricted"]
    assert (unrestricted["region"], unrestricted["cached"]) == ("us-east", False)
    assert restricted["status"] == "succeeded"
    assert (restricted["region"], restricted["cached"]) == ("eu-west", False)
    assert simulator.stats.by_model == {"gpt-us": 1, "gpt-eu": 1}
