"""The message models follow CONTRACT.md §2–5 exactly, and name what is wrong."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas import ControlCommand, JobRequest, JobResult, UsageEvent
from schemas.generate import expected_files
from workers.intake.parsing import describe_validation_error


def chat(**extra: object) -> dict[str, object]:
    job: dict[str, object] = {
        "job_id": "job-1",
        "tenant": "acme",
        "kind": "chat",
        "route": "summarize",
        "messages": [{"role": "user", "content": "hi"}],
    }
    job.update(extra)
    return job


def error_of(data: dict[str, object]) -> str:
    with pytest.raises(ValidationError) as caught:
        JobRequest.model_validate(data)
    return describe_validation_error(caught.value)


def test_a_full_chat_job_is_accepted() -> None:
    job = JobRequest.model_validate(
        chat(
            params={
                "max_tokens": 10,
                "temperature": 0,
                "top_p": 1,
                "stop": ["\n"],
                "seed": 1,
                "response_format": {"type": "json_object"},
            },
            priority="high",
            batch_id="b",
            deadline="2030-01-01T00:00:00Z",
            max_cost_usd=0.5,
            reply_topic="acme.out",
            metadata={"k": [1, 2]},
        )
    )
    assert job.params is not None and job.params.max_tokens == 10


def test_an_embedding_job_takes_a_string_or_a_list() -> None:
    one = JobRequest.model_validate(
        {"job_id": "e", "tenant": "t", "kind": "embedding", "route": "r", "input": "x"}
    )
    many = JobRequest.model_validate(
        {"job_id": "e", "tenant": "t", "kind": "embedding", "route": "r", "input": ["a", "b"]}
    )
    assert one.inputs == ["x"] and many.inputs == ["a", "b"]


def test_unknown_top_level_fields_are_rejected_by_name() -> None:
    assert "unknown field 'colour'" in error_of(chat(colour="red"))


def test_unknown_params_are_rejected_by_name() -> None:
    assert "unknown field 'params.frequencypenalty'" in error_of(
        chat(params={"frequencypenalty": 1})
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"job_id": "has space"}, "job_id"),
        ({"job_id": "x" * 129}, "job_id"),
        ({"tenant": ""}, "tenant"),
        ({"tenant": "t" * 65}, "tenant"),
        ({"kind": "image"}, "kind"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"priority": "urgent"}, "priority"),
        ({"deadline": "2030-01-01T00:00:00"}, "deadline"),
        ({"max_cost_usd": -1}, "max_cost_usd"),
        ({"params": {"temperature": 3}}, "params.temperature"),
        ({"params": {"stop": ["a", "b", "c", "d", "e"]}}, "params.stop"),
        ({"metadata": {"blob": "x" * 17000}}, "metadata"),
        ({"input": "x"}, "input"),
    ],
)
def test_each_invalid_field_is_named_in_the_message(change: dict[str, object], field: str) -> None:
    assert field in error_of(chat(**change))


def test_a_chat_job_needs_exactly_one_of_messages_or_template() -> None:
    data = chat(template={"name": "summarize", "variables": {"text": "x"}})
    assert "messages" in error_of(data)
    data.pop("messages")
    assert JobRequest.model_validate(data).template is not None


def test_embedding_inputs_are_bounded() -> None:
    data = {"job_id": "e", "tenant": "t", "kind": "embedding", "route": "r", "input": ["x"] * 2049}
    assert "input" in error_of(data)


def test_a_cancel_names_exactly_one_target() -> None:
    ControlCommand.model_validate({"action": "cancel", "tenant": "t", "job_id": "j"})
    ControlCommand.model_validate({"action": "cancel", "tenant": "t", "batch_id": "b"})
    with pytest.raises(ValidationError):
        ControlCommand.model_validate({"action": "cancel", "tenant": "t"})
    with pytest.raises(ValidationError):
        ControlCommand.model_validate(
            {"action": "cancel", "tenant": "t", "job_id": "j", "batch_id": "b"}
        )


def test_a_budget_set_names_a_batch_its_cap_and_when_and_nothing_else() -> None:
    good = {"action": "set_budget", "tenant": "t", "batch_id": "b", "budget_usd": 5.0}
    command = ControlCommand.model_validate({**good, "at": "2026-12-03T10:00:00Z"})
    assert command.budget_usd == 5.0 and command.at is not None
    for wrong in (
        good,  # no at
        {**good, "at": "2026-12-03T10:00:00"},  # a time without its zone
        {**good, "at": "2026-12-03T10:00:00Z", "job_id": "j"},
        {**good, "at": "2026-12-03T10:00:00Z", "budget_usd": -1},
        {"action": "set_budget", "tenant": "t", "budget_usd": 1, "at": "2026-12-03T10:00:00Z"},
        {"action": "cancel", "tenant": "t", "batch_id": "b", "budget_usd": 1.0},
    ):
        with pytest.raises(ValidationError):
            ControlCommand.model_validate(wrong)


def test_a_batch_budget_needs_the_jobs_batch() -> None:
    assert JobRequest.model_validate(chat(batch_id="b", batch_budget_usd=2.5)).batch_budget_usd
    with pytest.raises(ValidationError, match="batch_budget_usd: caps a batch"):
        JobRequest.model_validate(chat(batch_budget_usd=2.5))
    with pytest.raises(ValidationError):
        JobRequest.model_validate(chat(batch_id="b", batch_budget_usd=-1))


def test_results_and_usage_events_have_the_contract_fields() -> None:
    result = json.loads(
        JobResult.model_validate(
            {
                "job_id": "j",
                "tenant": "t",
                "status": "succeeded",
                "completed_at": "2026-01-01T00:00:00Z",
                "output": {"text": "x", "finish_reason": "stop"},
            }
        ).model_dump_json()
    )
    assert set(result) >= {
        "job_id",
        "tenant",
        "batch_id",
        "kind",
        "route",
        "metadata",
        "status",
        "output",
        "provider",
        "deployment",
        "usage",
        "cost_usd",
        "cached",
        "attempts",
        "error",
        "completed_at",
    }
    event = UsageEvent.model_json_schema()["properties"]
    assert set(event) >= {
        "event_id",
        "tenant",
        "job_id",
        "batch_id",
        "route",
        "provider",
        "deployment",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "cached",
        "timestamp",
    }


def test_a_result_and_a_usage_event_from_a_newer_headway_are_read_ignoring_new_fields() -> None:
    result = JobResult.model_validate_json(
        json.dumps(
            {
                "job_id": "j",
                "tenant": "t",
                "status": "succeeded",
                "completed_at": "2026-01-01T00:00:00Z",
                "output": {"text": "x", "finish_reason": "stop", "refusal": None},
                "usage": {"input_tokens": 3, "output_tokens": 1, "reasoning_tokens": 7},
                "carbon_grams": 0.2,  # a field this version does not know
            }
        )
    )
    assert (result.job_id, result.usage.input_tokens) == ("j", 3)
    assert "carbon_grams" not in result.model_dump()
    event = UsageEvent.model_validate(
        {
            "event_id": "e",
            "tenant": "t",
            "job_id": "j",
            "route": "r",
            "provider": "p",
            "deployment": "d",
            "input_tokens": 1,
            "output_tokens": 2,
            "cost_usd": 0.5,
            "timestamp": "2026-01-01T00:00:00Z",
            "tags": {"project": "x"},
        }
    )
    assert event.cost_usd == 0.5


def test_outputs_are_open_to_new_fields_and_inputs_closed_in_their_json_schemas() -> None:
    for model in (JobResult, UsageEvent):
        schema = model.model_json_schema()
        objects = [schema, *schema.get("$defs", {}).values()]
        assert all(d["additionalProperties"] is True for d in objects if d.get("type") == "object")
    assert JobRequest.model_json_schema()["additionalProperties"] is False
    assert ControlCommand.model_json_schema()["additionalProperties"] is False


def test_committed_json_schemas_are_current() -> None:
    for path, text in expected_files().items():
        assert path.exists(), f"{path} missing: run `make schemas`"
        assert path.read_text() == text, f"{path} is stale: run `make schemas`"


def test_the_asyncapi_document_lists_every_public_topic_and_is_current() -> None:
    from broker.asyncapi import DOCUMENT, render

    text = render()
    for topic in ("jobs.high", "jobs.normal", "jobs.low", "results", "usage", "dlq", "control"):
        assert f"address: headway.{topic}" in text
    for model in ("JobRequest", "JobResult", "UsageEvent", "ControlCommand"):
        assert f"{model}:" in text
    assert DOCUMENT.read_text() == text, "docs/asyncapi.yaml is stale: run `make schemas`"
