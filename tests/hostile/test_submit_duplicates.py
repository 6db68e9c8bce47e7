"""Found by the fuzz campaign: an OpenAI Batch file in which a ``custom_id`` repeats (OpenAI's
own Batch API refuses such a file) became two jobs of one job id — a job id is its tenant's
idempotency key, so the second line was answered as the first and its request never ran, and
nothing said so. ``headway submit`` reports the repeat as its line's error, naming the first."""

from __future__ import annotations

import json

from workers.cli.submission import Overrides, parse_lines


def _line(custom_id: str, text: str) -> str:
    body = {"model": "summarize", "messages": [{"role": "user", "content": text}]}
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return json.dumps(line)


def test_a_repeated_custom_id_is_its_lines_error_naming_the_first() -> None:
    lines = [_line("a", "one"), _line("b", "two"), _line("a", "three")]
    parsed = parse_lines(lines, Overrides(tenant="acme"))
    assert [job.job_id for job in parsed.jobs] == ["a", "b"]
    assert parsed.errors == ["line 3: custom_id: 'a' repeats line 1 (one job per id)"]


def test_a_repeated_job_id_of_one_tenant_is_its_lines_error() -> None:
    job = {
        "job_id": "j",
        "tenant": "acme",
        "kind": "chat",
        "route": "summarize",
        "messages": [{"role": "user", "content": "hi"}],
    }
    other_tenant = dict(job, tenant="other")
    lines = [json.dumps(job), json.dumps(other_tenant), json.dumps(job)]
    parsed = parse_lines(lines, Overrides())
    assert [(j.tenant, j.job_id) for j in parsed.jobs] == [("acme", "j"), ("other", "j")]
    assert parsed.errors == ["line 3: job_id: 'j' repeats line 1 (one job per id)"]
