"""Prompt templates end to end: pushed into the ledger, rendered by the worker before the
provider call (the simulator's request log shows the rendered text), recorded on the result,
and split across versions by weight on a route — over the real broker, HTTP and database."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker.client import HeadwayClient
from broker.config import HeadwayConfig, development_config, parse_config
from broker.settings import Settings
from tests.helpers import chat_job, read_topic, running_worker
from tests.integration.test_cli import headway
from workers.devstack.simulator import SimulatorServer
from workers.ledger import template_rows as store
from workers.ledger.database.engine import create_engine
from workers.templates.rendering import TemplateSpec

REPLY_V1 = TemplateSpec("reply", (("user", "Reply kindly to ticket: {{ ticket }}"),))
REPLY_V2 = TemplateSpec(
    "reply",
    (("system", "You answer support tickets."), ("user", "Reply {{ tone }} to: {{ ticket }}")),
    (("tone", "briefly"),),
)


async def push(database_url: str, *specs: TemplateSpec) -> list[int]:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            return [(await store.push(conn, spec)).version for spec in specs]
    finally:
        await engine.dispose()


def template_job(
    job_id: str, variables: dict[str, str], version: int | None = None
) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": "reply", "variables": variables}
    if version is not None:
        ref["version"] = version
    job = chat_job(job_id, template=ref)
    del job["messages"]
    return job


def rendered_by_job(simulator: SimulatorServer) -> dict[str, list[dict[str, Any]]]:
    return {job: body["messages"] for path, job, body in simulator.requests if job}


async def test_a_job_gets_its_pinned_or_the_latest_version_and_the_result_names_it(
    make_settings: Callable[..., Settings], database_url: str, simulator: SimulatorServer
) -> None:
    assert await push(database_url, REPLY_V1, REPLY_V2) == [1, 2]
    settings = make_settings(database_url=database_url)
    jobs = [
        template_job("pinned", {"ticket": "my order is late"}, version=1),
        template_job("latest", {"ticket": "refund please", "tone": "warmly"}),
        template_job("builtin", {})
        | {"template": {"name": "summarize", "variables": {"text": "A long text."}}},
        template_job("missing", {"tone": "x"}),
        template_job("typo", {"ticket": "t", "tones": "x"}),
        template_job("nosuch", {"ticket": "t"}, version=9),
        template_job("unknown", {}) | {"template": {"name": "nope", "variables": {}}},
    ]
    async with running_worker(settings, development_config(simulator.base_url)):
        async with HeadwayClient(settings) as client:
            await client.submit_many(jobs)
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=len(jobs)
        )
    got = {key: copies[0] for key, copies in results.by_key.items()}
    assert (got["pinned"]["template"], got["pinned"]["template_version"]) == ("reply", 1)
    assert (got["latest"]["template"], got["latest"]["template_version"]) == ("reply", 2)
    assert (got["builtin"]["template"], got["builtin"]["template_version"]) == ("summarize", 1)
    for name in ("pinned", "latest", "builtin"):
        assert got[name]["status"] == "succeeded", got[name]
    sent = rendered_by_job(simulator)
    assert sent["pinned"] == [
        {"role": "user", "content": "Reply kindly to ticket: my order is late"}
    ]
    assert sent["latest"][1] == {"role": "user", "content": "Reply warmly to: refund please"}
    assert "A long text." in sent["builtin"][1]["content"]
    expected_errors = {
        "missing": "missing variable 'ticket'",
        "typo": "unknown variable 'tones'",
        "nosuch": "'reply' has no version 9",
        "unknown": "no template named 'nope'",
    }
    for name, message in expected_errors.items():
        assert got[name]["status"] == "rejected", got[name]
        assert got[name]["error"]["code"] == "invalid_request"
        assert message in got[name]["error"]["message"]
        assert name not in sent  # never sent to a provider
    assert simulator.stats.chat_calls == 3


def split_config(base_url: str, weights: dict[int, float]) -> HeadwayConfig:
    data = development_config(base_url).model_dump(mode="json", exclude_none=True)
    data["routes"]["summarize"]["template_split"] = [
        {"template": "reply", "version": version, "weight": weight}
        for version, weight in weights.items()
    ]
    return parse_config(data)


async def test_a_route_splits_a_template_across_versions_by_weight(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    await push(sqlite_url, REPLY_V1, REPLY_V2)
    settings = make_settings(database_url=sqlite_url)
    jobs = [template_job(f"t-{i}", {"ticket": f"ticket {i}", "tone": "warmly"}) for i in range(400)]
    config = split_config(simulator.base_url, {1: 1.0, 2: 3.0})
    async with running_worker(settings, config):
        async with HeadwayClient(settings) as client:
            await client.submit_many(jobs)
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=len(jobs)
        )
    got = {key: copies[0] for key, copies in results.by_key.items()}
    assert all(r["status"] == "succeeded" for r in got.values())
    versions = Counter(r["template_version"] for r in got.values())
    assert 60 <= versions[1] <= 140 and versions[1] + versions[2] == 400, versions
    sent = rendered_by_job(simulator)
    for job_id, result in got.items():  # each job was rendered with the version it reports
        first = sent[job_id][0]["content"]
        assert first.startswith("Reply kindly") == (result["template_version"] == 1), job_id


async def test_templates_push_list_and_show_from_the_command_line(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/t.db")
    assert (await headway(settings, "db", "upgrade")).returncode == 0
    file = tmp_path / "reply.toml"
    file.write_text('name = "reply"\n[[messages]]\nrole = "user"\ncontent = "Hi {{ who }}"\n')
    first = await headway(settings, "templates", "push", str(file))
    again = await headway(settings, "templates", "push", str(file))
    file.write_text('name = "reply"\n[[messages]]\nrole = "user"\ncontent = "Hello {{ who }}"\n')
    changed = await headway(settings, "templates", "push", str(file))
    assert "reply: pushed as version 1" in first.stdout, first.stderr
    assert "reply: unchanged, still version 1" in again.stdout
    assert "reply: pushed as version 2" in changed.stdout
    listed = await headway(settings, "templates", "list")
    assert "summarize" in listed.stdout and "built in" in listed.stdout
    shown = await headway(settings, "templates", "show", "reply", "--version", "1")
    assert '"content": "Hi {{ who }}"' in shown.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[[messages]]\nrole = "robot"\ncontent = "x"\n')
    refused = await headway(settings, "templates", "push", str(bad))
    assert refused.returncode == 2 and "messages.0.role" in refused.stderr
    missing = await headway(settings, "templates", "show", "nope")
    assert missing.returncode == 2 and "no template named 'nope'" in missing.stderr
