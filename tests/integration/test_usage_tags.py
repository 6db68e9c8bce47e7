"""Cost attribution on SQLite and PostgreSQL: usage events carry the tags their tenant's
``usage_tags`` name, and ``headway usage --by`` sums spend and tokens by tag, batch, route,
deployment or day — the same before and after the retention window sums the events by day."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.settings import RetentionSettings
from schemas.results import JobResult, UsageEvent
from workers.ledger import queries
from workers.ledger.database.engine import create_engine
from workers.ledger.database.transactions import Transactions
from workers.ledger.records import Claim
from workers.ledger.repository import LedgerRepository
from workers.ledger.retention.pruner import Pruner
from workers.settle.outcomes import event_id, finish_record, usage_tags

DAY = 86_400.0
T0 = 1_790_000_000.0  # 2026-09-21T12:53:20Z
JOBS = [  # job, batch, deployment, day offset, cost, metadata
    ("a", "b1", "small", 0, 0.25, {"project": "search", "cost_center": 7}),
    ("b", "b1", "small", 0, 0.50, {"project": "search"}),
    ("c", "b2", "large", 1, 1.00, {"project": "chat", "cost_center": 7}),
    ("d", "b2", "large", 1, 2.00, {}),
]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def finish_all(ledger: Transactions) -> None:
    repository = LedgerRepository("w1", 60.0, lambda: T0)
    claims = [Claim("acme", job, batch, "chat", "summarize") for job, batch, *_ in JOBS]
    await ledger.run(functools.partial(repository.claim_many, claims=claims))
    finishes = []
    for job, batch, deployment, day, cost, metadata in JOBS:
        at = datetime.fromtimestamp(T0 + day * DAY, UTC)
        values: dict[str, Any] = {
            "job_id": job, "tenant": "acme", "batch_id": batch, "route": "summarize",
            "status": "succeeded", "provider": "p", "deployment": deployment,
            "output": {"text": "x", "finish_reason": "stop"}, "usage": {"input_tokens": 10},
            "cost_usd": cost, "completed_at": at.isoformat(),
        }  # fmt: skip
        result = JobResult.model_validate(values)
        event = UsageEvent(
            event_id=event_id("acme", job, 1, 0), tenant="acme", job_id=job, batch_id=batch,
            route="summarize", provider="p", deployment=deployment, input_tokens=10,
            output_tokens=2, cost_usd=cost, timestamp=at,
            tags=usage_tags(metadata, ["project", "cost_center"]),
        )  # fmt: skip
        pair = (event, event.model_dump_json())
        finishes.append(finish_record(result, result.model_dump_json(), [pair]))
    await ledger.run(functools.partial(repository.finish_many, finishes=finishes))


def sums(lines: list[queries.UsageLine]) -> dict[str, tuple[int, float]]:
    return {line.group: (line.input_tokens, round(line.cost_usd, 6)) for line in lines}


async def test_spend_by_tag_batch_deployment_and_day_reads_the_same_after_the_roll_up(
    ledger: Transactions, engine: AsyncEngine
) -> None:
    await finish_all(ledger)

    async def read() -> dict[str, dict[str, tuple[int, float]]]:
        groups = ("tag:project", "tag:cost_center", "batch", "deployment", "day", "route")
        return {by: sums(await queries.usage_summary(engine, "acme", by=by)) for by in groups}

    before = await read()
    settings = RetentionSettings(results_h=24, usage_h=1, jobs_d=8, usage_days_d=30)
    report = await Pruner(
        ledger.run, engine, settings, owner="w1", clock=lambda: T0 + 3 * DAY
    ).prune()
    after = await read()

    assert report.usage_rolled_up == 4
    assert before == after
    assert before["tag:project"] == {"search": (20, 0.75), "chat": (10, 1.0), "(none)": (10, 2.0)}
    assert before["tag:cost_center"] == {"7": (20, 1.25), "(none)": (20, 2.5)}
    assert before["batch"] == {"b1": (20, 0.75), "b2": (20, 3.0)}
    assert before["deployment"] == {"small": (20, 0.75), "large": (20, 3.0)}
    assert before["day"] == {"2026-09-21": (20, 0.75), "2026-09-22": (20, 3.0)}
    assert before["route"] == {"summarize": (40, 3.75)}


def test_tags_are_the_named_metadata_keys_as_text() -> None:
    metadata = {"project": "search", "cost_center": 7, "flags": ["a"], "secret": "x" * 300}

    tags = usage_tags(metadata, ["project", "cost_center", "flags", "missing", "secret"])

    assert tags is not None
    assert tags["project"] == "search" and tags["cost_center"] == "7"
    assert json.loads(tags["flags"]) == ["a"] and len(tags["secret"]) == 256
    assert "missing" not in tags
    assert usage_tags(metadata, []) is None and usage_tags(None, ["project"]) is None


async def test_the_cli_writes_spend_by_tag_as_csv_and_json_lines_for_finance(
    ledger: Transactions, database_url: str, make_settings: Any
) -> None:
    from tests.integration.test_cli import headway

    await finish_all(ledger)
    settings = make_settings(database_url=database_url)

    as_csv = await headway(settings, "usage", "--tenant", "acme", "--by", "tag:project",
                           "--format", "csv")  # fmt: skip
    as_json = await headway(settings, "usage", "--by", "batch", "--format", "json")
    wrong = await headway(settings, "usage", "--by", "colour")

    assert as_csv.returncode == 0, as_csv.stderr
    assert as_csv.stdout.splitlines() == [
        "tenant,tag:project,events,input_tokens,output_tokens,cost_usd",
        "acme,(none),1,10,2,2.0",
        "acme,chat,1,10,2,1.0",
        "acme,search,2,20,4,0.75",
    ]
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(x["group"], x["cost_usd"], x["by"]) for x in lines] == [
        ("b1", 0.75, "batch"), ("b2", 3.0, "batch"),
    ]  # fmt: skip
    assert wrong.returncode != 0 and "tag:KEY" in wrong.stderr


async def test_tag_sets_of_any_size_roll_up(ledger: Transactions, engine: AsyncEngine) -> None:
    repository = LedgerRepository("w1", 60.0, lambda: T0)
    await ledger.run(
        functools.partial(
            repository.claim_many, claims=[Claim("acme", "big", None, "chat", "summarize")]
        )
    )
    keys = [f"key_{i}" for i in range(6)]
    tags = usage_tags({key: "é" * 300 for key in keys}, keys)  # 6 x 256, JSON-escaped: ~9 KB
    at = datetime.fromtimestamp(T0, UTC)
    values: dict[str, Any] = {
        "job_id": "big", "tenant": "acme", "route": "summarize", "status": "succeeded",
        "provider": "p", "deployment": "small", "output": {"text": "x", "finish_reason": "stop"},
        "cost_usd": 0.5, "completed_at": at.isoformat(),
    }  # fmt: skip
    result = JobResult.model_validate(values)
    event = UsageEvent(
        event_id=event_id("acme", "big", 1, 0), tenant="acme", job_id="big", route="summarize",
        provider="p", deployment="small", input_tokens=10, output_tokens=2, cost_usd=0.5,
        timestamp=at, tags=tags,
    )  # fmt: skip
    finish = finish_record(result, result.model_dump_json(), [(event, event.model_dump_json())])
    await ledger.run(functools.partial(repository.finish_many, finishes=[finish]))
    before = sums(await queries.usage_summary(engine, "acme", by="tag:key_0"))

    settings = RetentionSettings(results_h=24, usage_h=1, jobs_d=8, usage_days_d=30)
    pruner = Pruner(ledger.run, engine, settings, owner="w1", clock=lambda: T0 + 3 * DAY)
    report = await pruner.prune()

    assert report.usage_rolled_up == 1
    assert sums(await queries.usage_summary(engine, "acme", by="tag:key_0")) == before
    assert before == {"é" * 256: (10, 0.5)}
