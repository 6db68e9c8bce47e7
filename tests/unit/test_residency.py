"""Data residency on fakes: a job goes only to deployments in the regions its tenant and its
route allow — not first, not on failover, not from another tenant's cached answer; none left is
``rejected``/``region_unavailable``; results and usage events name the region that served."""

from __future__ import annotations

from typing import Any

from broker.errors import ProviderServerError
from tests.fakes import Harness, ScriptedProvider, config_of, pipeline_for
from tests.helpers import chat_job
from workers.providers.base import ChatResponse

US = {"provider": "us", "model": "gpt-us", "region": "us-east", "input_usd_per_mtok": 1.0}
EU = {"provider": "eu", "model": "gpt-eu", "region": "eu-west", "input_usd_per_mtok": 2.0}
ANSWER = ChatResponse("an answer", "stop", 10, 2)


def harness(*, us: tuple[Any, ...] = (ANSWER,), eu: tuple[Any, ...] = (ANSWER,)) -> Harness:
    raw: dict[str, Any] = {
        "providers": {
            "us": {"type": "openai", "base_url": "http://127.0.0.1:9"},
            "eu": {"type": "openai", "base_url": "http://127.0.0.1:9"},
        },
        "routes": {
            "us-first": {"kind": "chat", "deployments": [US, EU]},
            "eu-first": {"kind": "chat", "deployments": [EU, US]},
            "us-only": {"kind": "chat", "deployments": [US]},
            "eu-route": {"kind": "chat", "deployments": [US, EU], "allowed_regions": ["eu-west"]},
            "shared": {
                "kind": "chat",
                "deployments": [US, EU],
                "cache": {"ttl_s": 60, "scope": "global"},
            },
        },
        "tenants": {"free": {}, "gdpr": {"allowed_regions": ["eu-west", "eu-central"]}},
    }
    providers = {"us": ScriptedProvider("us", *us), "eu": ScriptedProvider("eu", *eu)}
    built = pipeline_for(config_of(raw), providers)
    built.providers = providers  # type: ignore[attr-defined]
    return built


def calls(built: Harness, name: str) -> int:
    return len(built.providers[name].calls)  # type: ignore[attr-defined]


async def run(built: Harness, job_id: str, **job: Any) -> dict[str, Any] | None:
    await built.pipeline.handle(built.record(chat_job(job_id, **job)))
    found = [r for r in built.results() if r["job_id"] == job_id]
    return found[0] if found else None


async def test_a_restricted_tenant_is_served_inside_its_regions_and_the_result_says_where() -> None:
    built = harness()

    result = await run(built, "j", tenant="gdpr", route="us-first")

    assert result is not None and result["status"] == "succeeded"
    assert (result["deployment"], result["region"]) == ("gpt-eu", "eu-west")
    assert calls(built, "us") == 0
    [usage] = [sent.json() for sent in built.batches.on(built.topics.usage)]
    assert usage["region"] == "eu-west"


async def test_a_failover_that_would_leave_the_region_does_not_happen() -> None:
    down = ProviderServerError("eu is down", status_code=503, provider="eu")
    free, restricted, by_route = harness(eu=(down,)), harness(eu=(down,)), harness(eu=(down,))

    moved = await run(free, "j", tenant="free", route="eu-first")
    kept = await run(restricted, "j", tenant="gdpr", route="eu-first")
    kept_by_route = await run(by_route, "j", tenant="free", route="eu-route")

    assert moved is not None and moved["region"] == "us-east"  # no restriction: failover
    assert kept is None and restricted.parked()  # waits for eu-west instead of leaving it
    assert calls(restricted, "us") == 0 and calls(restricted, "eu") >= 1
    assert kept_by_route is None and by_route.parked() and calls(by_route, "us") == 0


async def test_no_deployment_in_an_allowed_region_is_a_rejection_naming_the_regions() -> None:
    built = harness()

    result = await run(built, "j", tenant="gdpr", route="us-only")

    assert result is not None and result["status"] == "rejected"
    assert result["error"]["code"] == "region_unavailable"
    assert "['eu-central', 'eu-west']" in result["error"]["message"]
    assert calls(built, "us") == 0


async def test_another_tenants_cached_answer_made_elsewhere_is_not_served() -> None:
    built = harness()
    deterministic = {"temperature": 0, "max_tokens": 20}
    same = [{"role": "user", "content": "the same question"}]

    first = await run(
        built, "a", tenant="free", route="shared", messages=same, params=deterministic
    )
    second = await run(
        built, "b", tenant="gdpr", route="shared", messages=same, params=deterministic
    )
    third = await run(
        built, "c", tenant="free", route="shared", messages=same, params=deterministic
    )

    assert first is not None and first["region"] == "us-east" and not first["cached"]
    assert second is not None and second["region"] == "eu-west" and not second["cached"]
    assert third is not None and third["cached"] and third["region"] == "us-east"
    assert (calls(built, "us"), calls(built, "eu")) == (1, 1)
