"""`headway submit` reads a file someone else may have written: every line is reported on its
own, and no line stops the others — a line nested deeper than a parser goes is that line's
error (it crashed the command, --skip-invalid or not), and a key an OpenAI Batch line does not
have (custom_id, method, url, body) is that line's error, never silently dropped (issue 33,
item 15)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.settings import Settings
from tests.helpers import chat_job, read_topic
from tests.integration.test_cli import headway
from workers.cli.submission import Overrides, parse_lines

CHAT = "/v1/chat/completions"
BODY = {"model": "summarize", "messages": [{"role": "user", "content": "hi"}]}
NESTED_JSON = "[" * 100_000 + "]" * 100_000
NESTED_JOB = json.dumps(chat_job("deep", metadata={"a": json.loads("[" * 900 + "]" * 900)}))


def batch_line(**extra: object) -> str:
    return json.dumps({"custom_id": "c1", "method": "POST", "url": CHAT, "body": BODY, **extra})


@pytest.mark.parametrize(("text", "reason"), [(NESTED_JSON, "not JSON: nested too deeply")])
def test_a_line_nested_past_the_parser_is_its_own_error_and_the_others_are_read(
    text: str, reason: str
) -> None:
    parsed = parse_lines([json.dumps(chat_job("a")), text, json.dumps(chat_job("b"))], Overrides())
    assert [job.job_id for job in parsed.jobs] == ["a", "b"]
    assert parsed.errors == [f"line 2: {reason}"]


def test_a_job_nested_deeper_than_a_worker_admits_is_its_own_error() -> None:
    # it parses, but no worker could publish its result (pydantic stops near 255 levels)
    parsed = parse_lines([NESTED_JOB, json.dumps(chat_job("b"))], Overrides())
    assert [job.job_id for job in parsed.jobs] == ["b"]
    assert parsed.errors == ["line 1: the job nests deeper than 100 levels; the limit"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            batch_line(priority="high"),
            "line 1: unknown field 'priority' on an OpenAI Batch line (its fields are body, "
            "custom_id, method, url)",
        ),
        (
            batch_line(tenant="mallory", metadata={}),
            "line 1: unknown fields 'metadata', 'tenant' on an OpenAI Batch line",
        ),
        (
            json.dumps({"custom_id": "c1", "method": "POST", "body": BODY}),
            "line 1: url: required on an OpenAI Batch line",
        ),
    ],
)
def test_a_key_an_openai_batch_line_does_not_have_is_its_lines_error(
    text: str, reason: str
) -> None:
    parsed = parse_lines([text, batch_line(custom_id="c2")], Overrides(tenant="acme"))
    assert [job.job_id for job in parsed.jobs] == ["c2"]
    assert len(parsed.errors) == 1 and parsed.errors[0].startswith(reason), parsed.errors


async def test_submit_with_skip_invalid_publishes_the_good_lines_around_a_nested_one(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    jobs = tmp_path / "mixed.jsonl"
    lines = [json.dumps(chat_job("first")), NESTED_JSON, NESTED_JOB, batch_line(colour="red")]
    jobs.write_text("\n".join([*lines, json.dumps(chat_job("last"))]) + "\n")

    created = await headway(settings, "topics", "create")  # Apache Kafka creates none itself
    assert created.returncode == 0, created.stderr
    refused = await headway(settings, "submit", str(jobs), "--tenant", "demo")
    assert refused.returncode == 2, refused.stderr
    assert "3 invalid lines; nothing was published" in refused.stderr
    assert "Traceback" not in refused.stderr

    result = await headway(settings, "submit", str(jobs), "--tenant", "demo", "--skip-invalid")
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stderr.split())  # as printed, wrapped to the terminal
    assert "line 2: not JSON: nested too deeply" in said
    assert "line 3: the job nests deeper than 100 levels" in said
    assert "line 4: unknown field 'colour'" in said
    assert "published 2 jobs" in result.stdout
    topic = f"{settings.topic_prefix}.jobs.normal"
    published = await read_topic(settings.kafka_bootstrap or "", topic, until_keys=2)
    assert set(published.by_key) == {"first", "last"}
