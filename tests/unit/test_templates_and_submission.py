"""Templates render strictly; job files are checked line by line before anything is sent."""

from __future__ import annotations

import json

import pytest

from broker.errors import TemplateError
from schemas.jobs import Priority
from workers.cli.submission import Overrides, parse_lines
from workers.templates.rendering import BUILTIN

SUMMARIZE = BUILTIN["summarize"][0]


def test_the_builtin_summarize_template_renders_with_defaults() -> None:
    messages = SUMMARIZE.render({"text": "Long text."})
    assert messages[0]["role"] == "system"
    assert "Long text." in messages[1]["content"] and "60 words" in messages[1]["content"]


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({}, "missing variable 'text'"),
        ({"text": "x", "tone": "y"}, "unknown variable 'tone'"),
    ],
)
def test_template_problems_name_the_variable(variables: dict[str, str], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        SUMMARIZE.render(variables)


def line(value: object) -> str:
    return json.dumps(value)


def test_native_lines_take_the_command_line_overrides() -> None:
    parsed = parse_lines(
        [
            line(
                {
                    "job_id": "a",
                    "kind": "chat",
                    "route": "r",
                    "messages": [{"role": "user", "content": "x"}],
                }
            ),
            "",
        ],
        Overrides(tenant="acme", batch_id="b1", priority=Priority.LOW),
    )
    assert parsed.errors == []
    job = parsed.jobs[0]
    assert (job.tenant, job.batch_id, job.priority) == ("acme", "b1", Priority.LOW)


def test_openai_batch_lines_become_jobs() -> None:
    chat = {
        "custom_id": "req-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 9,
        },
    }
    embed = {
        "custom_id": "req-2",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "text-embedding-3-small", "input": ["a"], "dimensions": 8},
    }
    parsed = parse_lines([line(chat), line(embed)], Overrides(tenant="acme", route=None))
    assert parsed.errors == []
    first, second = parsed.jobs
    assert (
        first.route == "gpt-4o-mini" and first.params is not None and first.params.max_tokens == 9
    )
    assert (
        second.kind.value == "embedding"
        and second.params is not None
        and second.params.dimensions == 8
    )


def test_bad_lines_are_reported_with_their_numbers() -> None:
    parsed = parse_lines(
        [
            "not json",
            line([1]),
            line({"job_id": "a", "tenant": "t", "kind": "chat", "route": "r"}),
            line({"custom_id": "x", "method": "POST", "url": "/v1/images", "body": {}}),
        ],
        Overrides(),
    )
    assert [e.split(":")[0] for e in parsed.errors] == ["line 1", "line 2", "line 3", "line 4"]
    assert "messages" in parsed.errors[2]
    assert "/v1/images" in parsed.errors[3]
