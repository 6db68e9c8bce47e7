"""Issue 23's acceptance: an OpenAI Batch input file of rich requests — developer messages,
images (https and inline), PDFs, tools and tool results, strict JSON schemas and JSON objects,
several answers, logprobs, OpenAI's own fields, base64 embeddings — goes in with ``headway
submit`` and comes back with ``headway results --format openai-batch`` in OpenAI's output
shapes, run against the simulator on every provider type that supports each feature; what a
provider type cannot take comes back refused by name, never silently dropped.

The file is ``examples/openai-batch-rich.jsonl``, the config ``examples/headway-rich.toml``
(README "Rich requests")."""

from __future__ import annotations

import base64
import json
import struct
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker.config import parse_config
from broker.settings import Settings
from tests.helpers import running_worker
from tests.integration.test_cli import headway
from workers.devstack.simulator import SimulatorServer

EXAMPLES = Path(__file__).parents[2] / "examples"
BATCH_FILE = EXAMPLES / "openai-batch-rich.jsonl"
ROUTES = ("gpt", "azure-gpt", "claude", "gemini", "compat")
INVOICE = {"vendor": "x", "total": 0, "currency": "EUR"}
REFUSED = {  # refused at routing: custom_id → what the error names
    "claude-n2": "params.n",
    "claude-seed": "params.seed",
    "gemini-https-image": "messages.0.content.1: image_url",
    "compat-logprobs": "params.logprobs",
}


def rich_config(sim: SimulatorServer) -> Any:
    data = tomllib.loads((EXAMPLES / "headway-rich.toml").read_text())
    for provider in data["providers"].values():
        provider["base_url"] = provider["base_url"].replace("http://127.0.0.1:8089", sim.root_url)
    return parse_config(data, "examples/headway-rich.toml")


async def run_the_file(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    tmp_path: Path,
) -> dict[str, dict[str, Any]]:
    settings = make_settings(database_url=sqlite_url)
    lines = BATCH_FILE.read_text().splitlines()
    out = tmp_path / "output.jsonl"
    async with running_worker(settings, rich_config(simulator)):
        submitted = await headway(
            settings, "submit", str(BATCH_FILE), "--tenant", "demo", "--batch", "rich",
            "--skip-invalid",
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        said = " ".join((submitted.stdout + submitted.stderr).split())
        assert "line 47: url: /v1/responses: the Responses API is not supported" in said
        read = await headway(
            settings, "results", "--batch", "rich", "--tenant", "demo", "--format", "openai-batch",
            "--follow",
            "--count", str(len(lines) - 1), "--out", str(out),
        )  # fmt: skip
        assert read.returncode == 0, read.stderr
    return {line["custom_id"]: line for line in map(json.loads, out.read_text().splitlines())}


def body(outputs: dict[str, dict[str, Any]], custom_id: str) -> dict[str, Any]:
    line = outputs[custom_id]
    assert line["error"] is None, line
    assert line["response"]["status_code"] == 200, line["response"]
    found: dict[str, Any] = line["response"]["body"]
    return found


def message(outputs: dict[str, dict[str, Any]], custom_id: str) -> dict[str, Any]:
    answer = body(outputs, custom_id)
    assert answer["object"] == "chat.completion" and len(answer["choices"]) == 1
    found: dict[str, Any] = answer["choices"][0]["message"]
    return found


def every_line_but_the_refused_one_comes_back(outputs: dict[str, dict[str, Any]]) -> None:
    sent = [json.loads(line)["custom_id"] for line in BATCH_FILE.read_text().splitlines()]
    assert len(sent) >= 30
    assert set(outputs) == set(sent) - {"responses-line"}


def the_five_lines_of_the_issue_all_run(outputs: dict[str, dict[str, Any]]) -> None:
    assert message(outputs, "issue-developer")["content"]
    assert message(outputs, "issue-image")["content"]
    assert json.loads(message(outputs, "issue-json-schema")["content"]) == INVOICE
    called = message(outputs, "issue-tools")
    assert (
        called["content"] is None and called["tool_calls"][0]["function"]["name"] == "get_weather"
    )
    vectors = body(outputs, "issue-embed-float")["data"]
    assert [d["index"] for d in vectors] == [0, 1]
    assert isinstance(vectors[0]["embedding"][0], float)


def every_provider_type_takes_images_tools_and_structured_output(
    route: str, outputs: dict[str, dict[str, Any]]
) -> None:
    assert message(outputs, f"{route}-image-inline")["content"].startswith("Summary[")
    called = outputs[f"{route}-tools-required"]["response"]["body"]["choices"][0]
    assert called["finish_reason"] == "tool_calls"
    call = called["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["id"]
    assert json.loads(call["function"]["arguments"]) == {"city": "x", "unit": "c"}
    assert outputs[f"{route}-tool-result"]["response"]["status_code"] == 200, outputs[
        f"{route}-tool-result"
    ]
    answered = outputs[f"{route}-tool-result"]["response"]["body"]["choices"][0]
    assert answered["finish_reason"] == "stop" and answered["message"]["content"]
    assert json.loads(message(outputs, f"{route}-json-schema")["content"]) == INVOICE
    assert isinstance(json.loads(message(outputs, f"{route}-json-object")["content"]), dict)


def pdfs_several_answers_logprobs_and_openais_own_fields(
    outputs: dict[str, dict[str, Any]],
) -> None:
    for route in ("gpt", "claude", "gemini"):
        assert message(outputs, f"{route}-pdf")["content"]
    assert len(body(outputs, "gpt-n3")["choices"]) == 3
    assert [c["index"] for c in body(outputs, "gemini-n2")["choices"]] == [0, 1]
    logprobs = body(outputs, "gpt-logprobs")["choices"][0]["logprobs"]
    assert logprobs["content"][0]["logprob"] < 0
    assert message(outputs, "gpt-passthrough")["content"]
    assert body(outputs, "gpt-passthrough")["system_fingerprint"] == "fp_headway_sim"


def what_a_provider_type_cannot_take_is_refused_by_name(
    custom_id: str, named: str, outputs: dict[str, dict[str, Any]]
) -> None:
    response = outputs[custom_id]["response"]
    assert response["status_code"] == 400
    error = response["body"]["error"]
    assert error["code"] == "unsupported_feature" and error["message"].startswith(named)


def invalid_json_fails_after_one_more_try_and_refusals_fail_or_fail_over(
    outputs: dict[str, dict[str, Any]],
) -> None:
    invalid = outputs["gpt-invalid-json"]["response"]
    assert invalid["status_code"] == 500
    assert invalid["body"]["error"]["code"] == "invalid_output"
    assert "asked twice" in invalid["body"]["error"]["message"]
    filtered = outputs["azure-content-filter"]["response"]
    assert filtered["status_code"] == 400
    assert filtered["body"]["error"]["code"] == "content_filtered"
    moved = body(outputs, "failover-content-filter")
    assert moved["model"] == "gpt-4o-mini-unfiltered"


def embeddings_come_back_as_base64_when_asked_and_from_gemini(
    outputs: dict[str, dict[str, Any]],
) -> None:
    encoded = body(outputs, "embed-base64")["data"][0]["embedding"]
    vector = struct.unpack("<8f", base64.b64decode(encoded))
    assert abs(sum(v * v for v in vector) - 1.0) < 1e-3  # the simulator's unit vectors
    assert len(body(outputs, "gemini-embed")["data"]) == 1


async def test_a_rich_openai_batch_file_runs_on_every_provider_type_that_takes_each_feature(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    tmp_path: Path,
) -> None:
    outputs = await run_the_file(make_settings, sqlite_url, simulator, tmp_path)

    every_line_but_the_refused_one_comes_back(outputs)
    the_five_lines_of_the_issue_all_run(outputs)
    for route in ROUTES:
        every_provider_type_takes_images_tools_and_structured_output(route, outputs)
    pdfs_several_answers_logprobs_and_openais_own_fields(outputs)
    for custom_id, named in REFUSED.items():
        what_a_provider_type_cannot_take_is_refused_by_name(custom_id, named, outputs)
    invalid_json_fails_after_one_more_try_and_refusals_fail_or_fail_over(outputs)
    embeddings_come_back_as_base64_when_asked_and_from_gemini(outputs)
    assert simulator.stats.by_model["gpt-4o-mini-unfiltered"] == 1
