"""What a chat call may produce never exceeds what its job reserved: a job without max_tokens
is sent with the output allowance its budget hold and tpm reservation were made for."""

from __future__ import annotations

from typing import Any

from schemas.jobs import JobRequest
from workers.calls import tokens


def chat(**params: Any) -> JobRequest:
    job: dict[str, Any] = {
        "job_id": "j",
        "tenant": "acme",
        "kind": "chat",
        "route": "summarize",
        "messages": [{"role": "user", "content": "hi"}],
    }
    if params:
        job["params"] = params
    return JobRequest.model_validate(job)


def test_a_job_without_max_tokens_is_sent_the_allowance_it_reserved() -> None:
    for job in (chat(), chat(temperature=0.5)):
        sent = tokens.call_params(job)
        assert sent.max_tokens == tokens.output_allowance(job) == tokens.DEFAULT_OUTPUT_TOKENS
    assert tokens.call_params(chat(temperature=0.5)).temperature == 0.5


def test_a_job_with_max_tokens_is_sent_its_own() -> None:
    job = chat(max_tokens=77)
    assert tokens.call_params(job).max_tokens == tokens.output_allowance(job) == 77
