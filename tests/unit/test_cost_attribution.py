"""Usage tags on fakes: a job's usage events carry the metadata keys its tenant's
``usage_tags`` name (the config's top-level list unless the tenant sets its own)."""

from __future__ import annotations

from typing import Any

from tests.fakes import ScriptedProvider, config_of, pipeline_for
from tests.helpers import chat_job

ROUTE = {"kind": "chat", "deployments": [{"provider": "p", "model": "m"}]}


def config() -> Any:
    return config_of(
        {
            "providers": {"p": {"type": "openai", "base_url": "http://127.0.0.1:9"}},
            "routes": {"summarize": ROUTE},
            "usage_tags": ["project"],
            "tenants": {"demo": {}, "finance": {"usage_tags": ["cost_center", "project"]}},
        }
    )


async def test_usage_events_carry_the_tenants_tags_from_the_jobs_metadata() -> None:
    built = pipeline_for(config(), {"p": ScriptedProvider("p")})
    metadata = {"project": "search", "cost_center": 42, "row": 7}

    await built.pipeline.handle(built.record(chat_job("a", metadata=metadata)))
    await built.pipeline.handle(built.record(chat_job("b", tenant="finance", metadata=metadata)))
    await built.pipeline.handle(built.record(chat_job("c")))

    events = {e["job_id"]: e for e in (s.json() for s in built.batches.on(built.topics.usage))}
    assert events["a"]["tags"] == {"project": "search"}
    assert events["b"]["tags"] == {"cost_center": "42", "project": "search"}
    assert events["c"]["tags"] is None


def test_a_tenants_own_usage_tags_replace_the_configs() -> None:
    built = config()
    assert built.usage_tags_of("demo") == ["project"]
    assert built.usage_tags_of("finance") == ["cost_center", "project"]
