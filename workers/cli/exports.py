"""A batch's results out of the ledger (``headway results``): native JobResult lines, or
OpenAI Batch output lines so a pipeline built on OpenAI's Batch API can switch to headway by
changing two commands (``headway submit`` already reads OpenAI Batch input lines).

An OpenAI Batch output line is ``{"id", "custom_id", "response", "error"}``: a succeeded job
has ``response = {"status_code": 200, "request_id", "body"}`` with the body the online API
would have returned (a ``chat.completion`` or an embedding ``list``); a job the API would have
refused or failed on has the status code it would have had and an ``{"error": …}`` body; a job
that never ran (expired, cancelled) has ``response = null`` and ``error = {code, message}``,
as OpenAI writes for requests its batch did not execute. A job that succeeded before the
ledger's results window (``HEADWAY_RETAIN_RESULTS_H``) has ``response = null`` and ``error =
{"code": "output_expired", …}``: its output is on the result topic only.

``--follow`` reads rows completed since the last poll, less an overlap (a row may commit a
little after a later-completed one), and drops the rows it already wrote.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
from collections.abc import AsyncGenerator
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from workers.ledger import queries
from workers.ledger.retention.finished_rows import EXPIRED_MESSAGE

FOLLOW_OVERLAP_S = 120.0  # how late a row may commit after one completed later was read

# the HTTP status the online API would have answered a job that did not succeed with
_STATUS_OF_CODE = {
    "invalid_request": 400,
    "unknown_route": 404,
    "forbidden": 403,
    "content_blocked": 400,
    "budget_exceeded": 429,
    "cost_limit_exceeded": 400,
    "provider_error": 500,
    "internal_error": 500,
    "unsupported_feature": 400,
    "content_filtered": 400,
    "invalid_output": 500,
    "region_unavailable": 403,
    "result_too_large": 500,
}
_NOT_RUN = {"expired": "batch_expired", "cancelled": "batch_cancelled"}


class ResultFormat(StrEnum):
    NATIVE = "native"
    OPENAI_BATCH = "openai-batch"


async def batch_lines(
    engine: AsyncEngine,
    batch_id: str,
    tenant: str,
    form: ResultFormat,
    *,
    follow: bool = False,
    poll_s: float = 0.5,
) -> AsyncGenerator[str, None]:
    """Each finished job's line of the tenant's batch once; with ``follow``, keep polling for
    more. A batch is one tenant's: producers choose batch ids, so tenants may share one."""
    after = 0.0
    seen: dict[tuple[str, str], float] = {}
    while True:
        since = after - FOLLOW_OVERLAP_S if follow and after else after
        for completed_at, key, text in await queries.batch_results(engine, batch_id, tenant, since):
            if key in seen:
                continue
            seen[key] = completed_at
            after = max(after, completed_at)
            yield text if form is ResultFormat.NATIVE else json.dumps(openai_batch_line(text))
        if not follow:
            return
        horizon = after - FOLLOW_OVERLAP_S
        for key in [key for key, at in seen.items() if at < horizon]:
            del seen[key]  # older than any row a later poll can return
        await asyncio.sleep(poll_s)


def openai_batch_line(result_json: str) -> dict[str, Any]:
    """One JobResult as an OpenAI Batch output line."""
    result = json.loads(result_json)
    job_id, status = result["job_id"], result["status"]
    ids = hashlib.sha256(f"{result['tenant']}\x00{job_id}".encode()).hexdigest()
    line: dict[str, Any] = {"id": f"batch_req_{ids[:24]}", "custom_id": job_id}
    if result.get("output_expired") and status == "succeeded":  # past the results window
        line["response"] = None
        line["error"] = {"code": "output_expired", "message": EXPIRED_MESSAGE}
        return line
    if status == "succeeded":
        body = _chat_body(result, ids) if result.get("kind") == "chat" else _embedding_body(result)
        line["response"] = {"status_code": 200, "request_id": f"req_{ids[24:48]}", "body": body}
        line["error"] = None
        return line
    error = result.get("error") or {"code": "provider_error", "message": status}
    if status in _NOT_RUN:
        line["response"] = None
        line["error"] = {"code": _NOT_RUN[status], "message": error["message"]}
        return line
    line["response"] = {
        "status_code": _STATUS_OF_CODE.get(error["code"], 400),
        "request_id": f"req_{ids[24:48]}",
        "body": {
            "error": {
                "message": error["message"],
                "type": "invalid_request_error" if status == "rejected" else "server_error",
                "param": None,
                "code": error["code"],
            }
        },
    }
    line["error"] = None
    return line


def _usage(result: dict[str, Any]) -> dict[str, int]:
    usage = result.get("usage") or {}
    prompt, completion = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _created(result: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(result["completed_at"]).timestamp())


def _choice(answer: dict[str, Any], index: int) -> dict[str, Any]:
    """One answer as OpenAI writes a choice: ``content`` null when the model only called
    tools, ``tool_calls`` only when it did."""
    calls = answer.get("tool_calls")
    text = answer.get("text", "")
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if calls and not text else text,
        "refusal": answer.get("refusal"),
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "index": index,
        "message": message,
        "logprobs": answer.get("logprobs"),
        "finish_reason": answer.get("finish_reason", "stop"),
    }


def _chat_body(result: dict[str, Any], ids: str) -> dict[str, Any]:
    output = result.get("output") or {}
    answers = output.get("choices") or [output]
    body = {
        "id": f"chatcmpl-{ids[48:]}",
        "object": "chat.completion",
        "created": _created(result),
        "model": result.get("deployment"),
        "choices": [_choice(answer, index) for index, answer in enumerate(answers)],
        "usage": _usage(result),
    }
    if output.get("system_fingerprint"):
        body["system_fingerprint"] = output["system_fingerprint"]
    return body


def _encoded(vector: list[float]) -> str:
    """A vector as OpenAI's ``encoding_format = "base64"`` sends it: little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _embedding_body(result: dict[str, Any]) -> dict[str, Any]:
    output = result.get("output") or {}
    vectors = output.get("embeddings", [])
    as_base64 = output.get("encoding_format") == "base64"
    usage = _usage(result)
    return {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": index,
                "embedding": _encoded(vector) if as_base64 else vector,
            }
            for index, vector in enumerate(vectors)
        ],
        "model": result.get("deployment"),
        "usage": {"prompt_tokens": usage["prompt_tokens"], "total_tokens": usage["prompt_tokens"]},
    }
