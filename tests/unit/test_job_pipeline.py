"""A job's path through JobPipeline, branch by branch, on in-memory fakes (tests/fakes.py):
every way a job can end — answered, rejected, served from the cache, over budget, set aside,
parked, cancelled, expired, failed, failed over, handed to the batch lane, already finished,
held by another worker, unreadable — each in milliseconds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker.errors import ProviderBadRequest, ProviderOverloaded, ProviderRateLimited
from schemas.control import ControlCommand
from schemas.jobs import Priority
from tests.fakes import Harness, ScriptedProvider, config_of, pipeline_for
from tests.helpers import chat_job
from workers.admission.budgets import OverBudget
from workers.admission.gate import limited
from workers.admission.quotas import Wait
from workers.intake.parsing import parse_job
from workers.providers.base import ChatResponse

PRIMARY = {"provider": "primary", "model": "big", "input_usd_per_mtok": 1.0}
BACKUP = {"provider": "backup", "model": "small", "input_usd_per_mtok": 2.0}


def config(**extra: Any) -> Any:
    raw: dict[str, Any] = {
        "providers": {
            "primary": {"type": "openai", "base_url": "http://127.0.0.1:9"},
            "backup": {"type": "openai", "base_url": "http://127.0.0.1:9"},
        },
        "routes": {
            "summarize": {"kind": "chat", "deployments": [PRIMARY, BACKUP]},
            "cached": {"kind": "chat", "deployments": [PRIMARY], "cache": {"ttl_s": 60}},
            "batched": {
                "kind": "chat",
                "deployments": [{**PRIMARY, "batch": True}],
            },
        },
        "tenants": {
            "demo": {},
            "narrow": {"allowed_routes": ["cached"]},
            "capped": {"budget_usd": 0.01},
        },
    }
    raw.update(extra)
    return config_of(raw)


def answer(text: str = "a summary") -> ChatResponse:
    return ChatResponse(text, "stop", 100, 20)


def harness(*primary: Any, backup: tuple[Any, ...] = (), **options: Any) -> Harness:
    providers = {
        "primary": ScriptedProvider("primary", *primary),
        "backup": ScriptedProvider("backup", *backup),
    }
    built = pipeline_for(config(), providers, **options)
    built.providers = providers  # type: ignore[attr-defined]
    return built


def calls(built: Harness, name: str) -> int:
    return len(built.providers[name].calls)  # type: ignore[attr-defined]


class Admits:
    """A stand-in admission: answers every ``admit`` with ``verdict``."""

    def __init__(self, verdict: Any) -> None:
        self.verdict = verdict
        self.released = 0

    def limits(self, job: Any, tenant: Any) -> bool:
        return limited(tenant)

    async def admit(self, *args: Any) -> Any:
        return self.verdict

    async def release(self, *args: Any, **kwargs: Any) -> None:
        self.released += 1


async def test_a_job_is_answered_stored_and_published_with_its_usage() -> None:
    built = harness(answer("the gist"))
    job = chat_job("j1")
    assert await built.pipeline.handle(built.record(job)) is None
    [result] = built.results()
    assert result["status"] == "succeeded" and result["output"]["text"] == "the gist"
    assert built.ledger.finished("demo", "j1")["status"] == "succeeded"
    [usage] = [sent.json() for sent in built.batches.on(built.topics.usage)]
    assert usage["job_id"] == "j1" and usage["input_tokens"] == 100
    assert calls(built, "primary") == 1


async def test_an_unknown_tenant_is_answered_on_its_topic_and_nothing_is_stored() -> None:
    built = harness(answer())
    await built.pipeline.handle(built.record(chat_job("j1", tenant="stranger")))
    [result] = built.results()
    assert result["status"] == "rejected" and result["error"]["code"] == "forbidden"
    assert built.ledger.rows == {} and calls(built, "primary") == 0


async def test_a_route_the_tenant_may_not_use_is_rejected_and_stored() -> None:
    built = harness(answer())
    await built.pipeline.handle(built.record(chat_job("j1", tenant="narrow")))
    [result] = built.results()
    assert result["status"] == "rejected" and result["error"]["code"] == "forbidden"
    assert built.ledger.finished("narrow", "j1")["status"] == "rejected"
    assert calls(built, "primary") == 0


async def test_an_invalid_job_is_dead_lettered_and_answered() -> None:
    built = harness(answer())
    await built.pipeline.handle(built.record({"job_id": "j1", "tenant": "demo", "kind": "chat"}))
    [letter] = built.dead_letters()
    assert dict(letter.headers)["headway-error"].startswith(b"invalid_request")
    [result] = built.results()
    assert result["status"] == "rejected" and result["error"]["code"] == "invalid_request"


async def test_an_unreadable_record_is_dead_lettered_with_no_answer() -> None:
    built = harness(answer())
    await built.pipeline.handle(built.record(b"\xff not json"))
    assert len(built.dead_letters()) == 1 and built.results() == []


async def test_a_cached_answer_is_served_without_a_call() -> None:
    built = harness(answer("remembered"), answer("called again"))
    deterministic = {
        "route": "cached",
        "messages": [{"role": "user", "content": "Summarise the same document."}],
        "params": {"temperature": 0, "max_tokens": 50},
    }
    await built.pipeline.handle(built.record(chat_job("j1", **deterministic)))
    await built.pipeline.handle(built.record(chat_job("j2", **deterministic)))
    first, second = built.results()
    assert first["cached"] is False and second["cached"] is True
    assert second["output"]["text"] == "remembered" and calls(built, "primary") == 1


async def test_a_tenant_over_budget_is_rejected_before_any_call() -> None:
    built = harness(answer(), admission=Admits(OverBudget("over its budget", False, 0.0)))
    await built.pipeline.handle(built.record(chat_job("j1", tenant="capped")))
    [result] = built.results()
    assert result["status"] == "rejected" and result["error"]["code"] == "budget_exceeded"
    assert calls(built, "primary") == 0


async def test_a_tenant_over_budget_that_defers_waits_for_its_next_period() -> None:
    built = harness(answer(), admission=Admits(OverBudget("over its budget", True, 3600.0)))
    wait = await built.pipeline.handle(built.record(chat_job("j1", tenant="capped")))
    assert wait == Wait(3600.0, "budget", park=True)
    assert built.results() == [] and calls(built, "primary") == 0


async def test_a_tenant_over_its_quota_is_set_aside_and_the_job_not_started() -> None:
    built = harness(answer(), admission=Admits(Wait(0.5, "rpm")))
    wait = await built.pipeline.handle(built.record(chat_job("j1", tenant="capped")))
    assert wait == Wait(0.5, "rpm") and built.ledger.rows == {}


async def test_an_admitted_job_gives_its_admission_back_when_it_ends() -> None:
    from workers.admission.gate import Ticket

    admits = Admits(Ticket("capped", None))
    built = harness(answer(), admission=admits)
    await built.pipeline.handle(built.record(chat_job("j1", tenant="capped")))
    assert admits.released == 1 and built.results()[0]["status"] == "succeeded"


async def test_a_cancelled_job_ends_cancelled_without_a_call() -> None:
    built = harness(answer())
    command = ControlCommand.model_validate({"action": "cancel", "tenant": "demo", "job_id": "j1"})
    await built.cancellations.record(command)
    await built.pipeline.handle(built.record(chat_job("j1")))
    [result] = built.results()
    assert result["status"] == "cancelled" and calls(built, "primary") == 0


async def test_a_job_past_its_deadline_expires_before_its_call() -> None:
    built = harness(answer())
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    await built.pipeline.handle(built.record(chat_job("j1", deadline=past)))
    [result] = built.results()
    assert result["status"] == "expired" and "before start" in result["error"]["message"]
    assert calls(built, "primary") == 0


async def test_a_call_that_outlives_the_deadline_expires_the_job() -> None:
    built = harness(2.0)  # the provider answers after 2 s
    soon = (datetime.now(UTC) + timedelta(milliseconds=50)).isoformat()
    await asyncio.wait_for(built.pipeline.handle(built.record(chat_job("j1", deadline=soon))), 1)
    [result] = built.results()
    assert result["status"] == "expired" and "during the call" in result["error"]["message"]


async def test_a_permanent_provider_error_fails_the_job_without_failover() -> None:
    built = harness(ProviderBadRequest("bad request"), backup=(answer(),))
    await built.pipeline.handle(built.record(chat_job("j1")))
    [result] = built.results()
    assert result["status"] == "failed" and result["error"]["code"] == "provider_error"
    assert calls(built, "backup") == 0


async def test_a_retryable_error_fails_over_to_the_next_deployment_at_once() -> None:
    built = harness(ProviderOverloaded("busy"), backup=(answer("from the backup"),))
    await built.pipeline.handle(built.record(chat_job("j1")))
    [result] = built.results()
    assert result["status"] == "succeeded" and result["output"]["text"] == "from the backup"
    assert result["provider"] == "backup" and calls(built, "primary") == 1


async def test_a_long_retry_after_parks_the_job_and_lets_its_claim_go() -> None:
    limited = ProviderRateLimited("slow down", retry_after=120.0)
    built = harness(limited, backup=(limited,), settings={"retry_park_after_s": 5.0})
    await built.pipeline.handle(built.record(chat_job("j1")))
    [parked] = built.parked()
    assert int(dict(parked.headers)["headway-not-before"]) > 0
    assert built.results() == [] and built.ledger.rows[("demo", "j1")].owner is None


async def test_a_job_parked_too_often_fails_with_its_last_error() -> None:
    limited = ProviderRateLimited("slow down", retry_after=120.0)
    built = harness(limited, backup=(limited,), settings={"retry_max_parks": 0})
    await built.pipeline.handle(built.record(chat_job("j1")))
    [result] = built.results()
    assert result["status"] == "failed" and built.parked() == []


async def test_a_deadline_tolerant_job_is_handed_to_the_batch_lane() -> None:
    built = harness(answer(), batch_lane=True)
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    job = chat_job("j1", route="batched", priority=Priority.LOW.value, deadline=later)
    await built.pipeline.handle(built.record(job))
    [handed] = built.batch_lane.items
    assert handed.job.job_id == "j1" and handed.deployment.batch
    assert built.results() == [] and calls(built, "primary") == 0


async def test_a_job_finished_before_is_republished_as_stored() -> None:
    built = harness(answer("first"), answer("second"))
    job = chat_job("j1")
    await built.pipeline.handle(built.record(job))
    await built.pipeline.handle(built.record(job))  # redelivered
    first, again = built.results()
    assert first == again and calls(built, "primary") == 1


async def test_a_job_held_by_the_batch_lane_is_left_to_it() -> None:
    from workers.ledger.batch_lane_rows import BATCH_OWNER

    built = harness(answer())
    built.ledger.held_by("demo", "j1", BATCH_OWNER)
    await built.pipeline.handle(built.record(chat_job("j1")))
    assert built.results() == [] and calls(built, "primary") == 0


@pytest.mark.parametrize("ending", ["rejected", "cancelled", "expired"])
async def test_every_ending_without_an_answer_is_stored_once(ending: str) -> None:
    built = harness(answer())
    job = chat_job("j1", tenant="narrow" if ending == "rejected" else "demo")
    if ending == "cancelled":
        command = {"action": "cancel", "tenant": "demo", "job_id": "j1"}
        await built.cancellations.record(ControlCommand.model_validate(command))
    if ending == "expired":
        job["deadline"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    await built.pipeline.handle(built.record(job))
    await built.pipeline.handle(built.record(job))  # redelivered: the stored result again
    first, again = built.results()
    assert first["status"] == ending and first == again


async def test_a_job_headways_code_keeps_failing_on_is_dead_lettered_and_ends_failed() -> None:
    built = harness(answer())
    record = built.record(chat_job("j1"))
    intake = parse_job(record.value, 1024 * 1024)
    await built.pipeline.poison.poisoned(record, intake, "internal_error: RuntimeError('boom')")
    [letter] = built.dead_letters()
    assert dict(letter.headers)["headway-error"].startswith(b"internal_error")
    [result] = built.results()
    assert result["status"] == "failed" and result["error"]["code"] == "internal_error"
    assert built.ledger.finished("demo", "j1")["status"] == "failed"


async def test_an_ending_the_database_refuses_is_published_unstored() -> None:
    built = harness(answer())
    built.ledger.refused.add("j1")
    await built.pipeline.handle(built.record({"job_id": "j1", "tenant": "demo", "kind": "chat"}))
    [result] = built.results()
    assert result["status"] == "rejected" and ("demo", "j1") not in built.ledger.rows
