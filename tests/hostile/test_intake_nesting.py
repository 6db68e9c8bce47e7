"""Found by the fuzz campaign (tests/hostile/test_fuzz_campaign.py): a record nested as deeply
as ``json.loads`` still reads, holding a UTF-16 surrogate escape anywhere (an emoji written
``\\ud83d\\ude00`` is enough), made the lone-surrogate check recurse past Python's limit —
``parse_job`` raised ``RecursionError`` out of the fetch loop instead of answering."""

from __future__ import annotations

import json

import pytest

from workers.intake.parsing import InvalidJob, ValidJob, parse_job


def _nested(depth: int, opening: str, closing: str) -> bytes:
    job = {
        "job_id": "deep-1",
        "tenant": "acme",
        "kind": "chat",
        "route": "summarize",
        "messages": [{"role": "user", "content": "\ud83d\ude00 hello"}],
        "metadata": "DEEP",
    }
    deep = opening * depth + '"x"' + closing * depth
    return json.dumps(job).replace('"DEEP"', deep).encode()


@pytest.mark.parametrize(("opening", "closing"), [("[", "]"), ('{"a": ', "}")])
def test_a_deeply_nested_record_with_a_surrogate_escape_is_answered_not_raised(
    opening: str, closing: str
) -> None:
    for depth in (400, 900, 990):
        intake = parse_job(_nested(depth, opening, closing), 1024 * 1024)
        assert isinstance(intake, InvalidJob | ValidJob) or intake.reason, depth
        if isinstance(intake, InvalidJob):
            assert intake.job_id == "deep-1" and intake.reason


def test_a_lone_surrogate_deep_inside_a_record_is_still_found() -> None:
    value = _nested(60, "[", "]").replace(b'"x"', b'"\\ud800"')  # within intake's nesting
    intake = parse_job(value, 1024 * 1024)
    assert isinstance(intake, InvalidJob)
    assert "surrogate" in intake.reason
