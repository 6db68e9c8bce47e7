"""Reading job files for ``headway submit``: JobRequest JSONL, or OpenAI Batch JSONL.

Every line is checked before anything is published; a bad line is reported with its number
and the field at fault, and nothing is sent unless the caller chooses to skip bad lines. No line
stops the others: one nested past what a parser goes, or holding more than a worker admits, is
its own error; a key an OpenAI Batch line does not have (``custom_id``, ``method``, ``url``,
``body``) is its line's error, never dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from schemas.jobs import EMBEDDING_ONLY, SHARED_PARAMS, JobRequest, Params, Priority
from workers.intake.parsing import describe_validation_error, shape_refused

OPENAI_BATCH_KEYS = {"custom_id", "method", "url", "body"}
OPENAI_URL_KINDS = {"/v1/chat/completions": "chat", "/v1/embeddings": "embedding"}
#: every body field of each endpoint maps to a job field or a parameter (whether a provider
#: type honours it is decided at routing, by broker/capabilities.py); none is dropped
OPENAI_PARAMS = {
    "chat": set(Params.model_fields) - EMBEDDING_ONLY,
    "embedding": EMBEDDING_ONLY | SHARED_PARAMS,
}
#: endpoints and fields refused line by line, with the reason
OPENAI_REFUSED_URLS = {
    "/v1/responses": "the Responses API is not supported; use /v1/chat/completions",
    "/v1/completions": "the legacy completions API is not supported; use /v1/chat/completions",
}
OPENAI_REFUSED_FIELDS = {
    "functions": "deprecated by OpenAI; use tools",
    "function_call": "deprecated by OpenAI; use tool_choice",
    "audio": "audio output is not supported",
    "stream_options": "a batch job is not streamed",
}


@dataclass(frozen=True)
class Overrides:
    tenant: str | None = None
    batch_id: str | None = None
    priority: Priority | None = None
    route: str | None = None


@dataclass
class ParsedFile:
    jobs: list[JobRequest] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _from_openai_batch(line: dict[str, Any], overrides: Overrides) -> dict[str, Any]:
    missing = sorted(OPENAI_BATCH_KEYS - line.keys())
    if missing:
        raise ValueError(f"{', '.join(missing)}: required on an OpenAI Batch line")
    unknown = sorted(line.keys() - OPENAI_BATCH_KEYS)
    if unknown:  # a job's field (tenant, priority) put beside the body: never dropped
        named = ", ".join(repr(key) for key in unknown)
        fields = "field" if len(unknown) == 1 else "fields"
        raise ValueError(
            f"unknown {fields} {named} on an OpenAI Batch line (its fields are "
            f"{', '.join(sorted(OPENAI_BATCH_KEYS))})"
        )
    url = str(line.get("url", ""))
    if url in OPENAI_REFUSED_URLS:
        raise ValueError(f"url: {url}: {OPENAI_REFUSED_URLS[url]}")
    kind = OPENAI_URL_KINDS.get(url)
    if kind is None:
        raise ValueError(f"url: {url!r} is not one of {sorted(OPENAI_URL_KINDS)}")
    if line.get("method", "POST") != "POST":
        raise ValueError(f"method: {line.get('method')!r}: the batch API takes POST only")
    body = line.get("body")
    if not isinstance(body, dict):
        raise ValueError("body: must be an object")
    job: dict[str, Any] = {"job_id": line.get("custom_id"), "kind": kind}
    route = overrides.route or body.get("model")
    job["route"] = route
    params: dict[str, Any] = {}
    for key, value in body.items():
        if key == "model":
            continue  # the route: --route, or the model's name
        if key == "stream":
            if value:
                raise ValueError("body.stream: a batch job is not streamed")
            continue
        if key in OPENAI_REFUSED_FIELDS:
            raise ValueError(f"body.{key}: {OPENAI_REFUSED_FIELDS[key]}")
        if kind == "chat" and key == "messages":
            job["messages"] = value
        elif kind == "embedding" and key == "input":
            job["input"] = value
        elif key in OPENAI_PARAMS[kind]:
            params[key] = value
        else:
            raise ValueError(f"body.{key}: not a field of {url} that headway knows")
    if params:
        job["params"] = params
    return job


def _apply(job: dict[str, Any], overrides: Overrides) -> dict[str, Any]:
    if overrides.tenant is not None:
        job["tenant"] = overrides.tenant
    if overrides.batch_id is not None:
        job["batch_id"] = overrides.batch_id
    if overrides.priority is not None:
        job["priority"] = overrides.priority.value
    if overrides.route is not None:
        job["route"] = overrides.route
    return job


def parse_lines(lines: list[str], overrides: Overrides) -> ParsedFile:
    """Each line's job, or its error. A job id is its tenant's idempotency key: a line whose
    (tenant, id) an earlier line has is an error naming that line (it would be answered as the
    first, its own request never run)."""
    parsed = ParsedFile()
    first: dict[tuple[str, str], int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            job, id_field = _job(text, overrides)
        except ValidationError as error:
            parsed.errors.append(f"line {number}: {describe_validation_error(error)}")
            continue
        except ValueError as error:
            parsed.errors.append(f"line {number}: {error}")
            continue
        seen = first.setdefault((job.tenant, job.job_id), number)
        if seen != number:
            parsed.errors.append(
                f"line {number}: {id_field}: {job.job_id!r} repeats line {seen} (one job per id)"
            )
            continue
        parsed.jobs.append(job)
    return parsed


def _job(text: str, overrides: Overrides) -> tuple[JobRequest, str]:
    """One line's job and the name of its id's field; ValueError (or pydantic's) saying what
    is wrong with it."""
    try:
        raw = json.loads(text)
    except RecursionError:
        raise ValueError("not JSON: nested too deeply") from None
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    id_field = "job_id"
    if "custom_id" in raw:  # no JobRequest has one: an OpenAI Batch line
        raw, id_field = _from_openai_batch(raw, overrides), "custom_id"
    refused = shape_refused(raw)  # as a worker's intake would, before any recursive reader
    if refused is not None:
        raise ValueError(refused)
    try:
        return JobRequest.model_validate(_apply(raw, overrides)), id_field
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_file(path: Path, overrides: Overrides) -> ParsedFile:
    return parse_lines(path.read_text(encoding="utf-8").splitlines(), overrides)
