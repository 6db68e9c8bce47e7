"""OpenAI Batch compatibility both ways: an OpenAI Batch input file goes in with
``headway submit`` and comes back as OpenAI Batch output lines with
``headway results --format openai-batch`` — matched by custom_id, bodies shaped like the
online API's; and ``--follow`` never misses a row that commits late."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import insert

from broker.config import development_config
from broker.settings import Settings
from tests.helpers import running_worker
from tests.integration.test_cli import headway
from workers.cli.exports import ResultFormat, batch_lines, openai_batch_line
from workers.devstack.simulator import SimulatorServer
from workers.ledger.database.engine import create_engine
from workers.ledger.database.models import JobRow


def openai_line(custom_id: str, url: str, body: dict[str, object]) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


async def test_openai_batch_lines_in_and_openai_batch_lines_out(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    tmp_path: Path,
) -> None:
    settings = make_settings(database_url=sqlite_url)
    lines = [
        openai_line(
            f"request-{i}",
            "/v1/chat/completions",
            {"model": "summarize", "messages": [{"role": "user", "content": f"text {i}"}]},
        )
        for i in range(20)
    ]
    lines.append(
        openai_line("vectors", "/v1/embeddings", {"model": "embed", "input": ["a", "b", "c"]})
    )
    lines.append(
        openai_line(
            "nowhere",
            "/v1/chat/completions",
            {"model": "gpt-nope", "messages": [{"role": "user", "content": "x"}]},
        )
    )
    batch_file = tmp_path / "batch-input.jsonl"
    batch_file.write_text("\n".join(lines) + "\n")
    out = tmp_path / "batch-output.jsonl"
    async with running_worker(settings, development_config(simulator.base_url)):
        submitted = await headway(
            settings, "submit", str(batch_file), "--tenant", "demo", "--batch", "oai"
        )
        assert submitted.returncode == 0, submitted.stderr
        read = await headway(
            settings,
            "results",
            "--batch",
            "oai",
            "--tenant",
            "demo",
            "--format",
            "openai-batch",
            "--follow",
            "--count",
            str(len(lines)),
            "--out",
            str(out),
        )
        assert read.returncode == 0, read.stderr
    got = {line["custom_id"]: line for line in map(json.loads, out.read_text().splitlines())}
    assert set(got) == {f"request-{i}" for i in range(20)} | {"vectors", "nowhere"}
    chat = got["request-3"]
    assert chat["error"] is None and chat["id"].startswith("batch_req_")
    assert chat["response"]["status_code"] == 200
    body = chat["response"]["body"]
    assert body["object"] == "chat.completion" and body["model"] == "sim-chat-mini"
    assert body["choices"][0]["message"]["content"].startswith("Summary[")
    assert body["usage"]["total_tokens"] == (
        body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    vectors = got["vectors"]["response"]["body"]
    assert vectors["object"] == "list" and [d["index"] for d in vectors["data"]] == [0, 1, 2]
    refused = got["nowhere"]["response"]
    assert refused["status_code"] == 404
    assert refused["body"]["error"]["code"] == "unknown_route"


def test_a_job_that_never_ran_has_no_response_and_an_error() -> None:
    expired = openai_batch_line(
        json.dumps(
            {
                "job_id": "late",
                "tenant": "acme",
                "status": "expired",
                "error": {"code": "deadline_exceeded", "message": "deadline passed before start"},
                "completed_at": "2026-11-23T00:00:00Z",
            }
        )
    )
    assert expired["response"] is None
    assert expired["error"] == {"code": "batch_expired", "message": "deadline passed before start"}


async def test_following_results_picks_up_a_row_that_commits_after_a_later_one(
    sqlite_url: str,
) -> None:
    engine = create_engine(sqlite_url)
    now = time.time()

    async def finished(job_id: str, completed_at: float) -> None:
        async with engine.begin() as conn:
            await conn.execute(
                insert(JobRow).values(
                    tenant="acme",
                    job_id=job_id,
                    status="succeeded",
                    batch_id="b",
                    result_json=json.dumps({"job_id": job_id}),
                    created_at=now,
                    updated_at=now,
                    completed_at=completed_at,
                )
            )

    try:
        await finished("later", now)
        lines = batch_lines(engine, "b", "acme", ResultFormat.NATIVE, follow=True, poll_s=0.05)
        first = await anext(lines)
        await finished("earlier-but-slow-to-commit", now - 5)
        second = await asyncio.wait_for(anext(lines), 5)
        await lines.aclose()
    finally:
        await engine.dispose()
    assert [json.loads(first)["job_id"], json.loads(second)["job_id"]] == [
        "later",
        "earlier-but-slow-to-commit",
    ]
