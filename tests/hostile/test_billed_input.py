"""Everything a provider bills as input is in the reservation (issue 33 §5).

Providers bill a request's tool definitions, its response schema, images, documents, a
message's ``name``, an assistant's tool calls and the ids tools answer as input tokens, and a
rejected ``prediction`` as output tokens. A job's estimate — the one every budget, quota and
``max_cost_usd`` holds (``workers.calls.tokens.job_input`` and ``output_allowance``) — counts
each of them, so a job whose tool definitions cost $0.98 is refused by a $0.05 budget instead
of spending past it.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from broker.client import HeadwayClient
from broker.config import HeadwayConfig, parse_config
from broker.settings import Settings
from schemas.jobs import JobRequest
from tests.fakes import ScriptedProvider, config_of, pipeline_for
from tests.helpers import chat_job, read_topic, running_worker
from workers.admission.gate import Ticket
from workers.calls import tokens
from workers.calls.tokens import BilledInput
from workers.content import media
from workers.devstack.simulator import SimulatorConfig, SimulatorServer
from workers.ledger.database.engine import create_engine
from workers.ledger.database.models import BudgetRow, to_nano
from workers.providers.base import ChatResponse

IN_USD_PER_MTOK, OUT_USD_PER_MTOK = 100.0, 200.0


def tools(count: int = 16, description_chars: int = 2000) -> list[dict[str, Any]]:
    """Tool definitions of about ``count × description_chars`` characters."""
    return [
        {
            "type": "function",
            "function": {
                "name": f"lookup_{i}",
                "description": f"tool {i} " + "d" * description_chars,
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
        for i in range(count)
    ]


def schema_format(description_chars: int = 7000) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "description": "s" * description_chars,
            "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
        },
    }


def heavy_job(job_id: str, tenant: str, **params: Any) -> dict[str, Any]:
    """A short prompt carrying ~$0.98 of tool definitions and schema at 100 USD/Mtok."""
    chosen = {"max_tokens": 20, "tools": tools(), "tool_choice": "none"}
    chosen.update(params)
    return chat_job(job_id, tenant=tenant, params=chosen)


def stack_config(simulator_url: str) -> HeadwayConfig:
    return parse_config(
        {
            "providers": {"sim": {"type": "simulator", "base_url": simulator_url}},
            "routes": {
                "summarize": {
                    "kind": "chat",
                    "deployments": [
                        {
                            "provider": "sim",
                            "model": "m",
                            "input_usd_per_mtok": IN_USD_PER_MTOK,
                            "output_usd_per_mtok": OUT_USD_PER_MTOK,
                        }
                    ],
                }
            },
            "tenants": {
                "tight": {"budget_usd": 0.05, "budget_period": "total"},
                "roomy": {"budget_usd": 2.5, "budget_period": "total"},
                "free": {},
            },
        }
    )


async def test_tool_definitions_and_a_schema_are_reserved_against_budgets_and_cost_limits(
    make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    """Over the real broker, real HTTP to the simulator (which bills tools and schemas as
    input, like the providers) and PostgreSQL: a $0.98 job is refused by a $0.05 budget and by
    ``max_cost_usd = 0.05`` without a call, and five of them against $2.50 spend at most $2.50."""
    tight = heavy_job("tight-1", "tight", response_format=schema_format())
    capped = heavy_job("capped-1", "free", response_format=schema_format())
    capped["max_cost_usd"] = 0.05
    roomy = [heavy_job(f"roomy-{i}", "roomy", response_format=schema_format()) for i in range(5)]
    async with SimulatorServer(SimulatorConfig(seed=5)) as simulator:
        settings = make_settings(database_url=postgres_url, concurrency=8)
        async with running_worker(settings, stack_config(simulator.base_url)):
            async with HeadwayClient(settings) as client:
                await client.submit_many([tight, capped, *roomy])
            results = await read_topic(
                settings.kafka_bootstrap or "", settings.topics.results, until_keys=7
            )
    by_key = {key: copies[0] for key, copies in results.by_key.items()}
    assert by_key["tight-1"]["status"] == "rejected", by_key["tight-1"]
    assert by_key["tight-1"]["error"]["code"] == "budget_exceeded"
    assert by_key["capped-1"]["status"] == "rejected", by_key["capped-1"]
    assert by_key["capped-1"]["error"]["code"] == "cost_limit_exceeded"
    calls = simulator.stats.jobs
    assert calls["tight-1"] == 0 and calls["capped-1"] == 0
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            spent = dict((await conn.execute(select(BudgetRow.tenant, BudgetRow.spent_nusd))).all())
    finally:
        await engine.dispose()
    assert spent.get("tight", 0) == 0
    assert 0 < spent["roomy"] <= to_nano(2.5)  # some ran, each about $0.98: at most two
    assert 1 <= sum(calls[f"roomy-{i}"] for i in range(5)) <= 2


# -- on fakes: each billed part is in the one estimate -----------------------------------------


def job_of(messages: list[dict[str, Any]] | None = None, **params: Any) -> JobRequest:
    raw = chat_job("j1", messages=messages or [{"role": "user", "content": "hi"}])
    if params:
        raw["params"] = params
    return JobRequest.model_validate(raw)


def estimate(job: JobRequest) -> int:
    wire = [m.model_dump(mode="json", exclude_none=True) for m in job.messages or ()]
    return tokens.job_input(job, wire)


def png(width: int, height: int) -> str:
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR"
    header += struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    header += struct.pack(">I", zlib.crc32(header[12:]))
    return "data:image/png;base64," + base64.b64encode(header).decode()


def pdf(pages: int) -> str:
    body = b"%PDF-1.4\n" + b"".join(b"<< /Type /Page >>\n" for _ in range(pages))
    return "data:application/pdf;base64," + base64.b64encode(body).decode()


def with_part(part: dict[str, Any]) -> list[dict[str, Any]]:
    """The base job's message ("hi") with one more part."""
    return [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]


ASSISTANT_CALL = {
    "role": "assistant",
    "tool_calls": [
        {
            "id": "call_" + "i" * 200,
            "type": "function",
            "function": {"name": "lookup", "arguments": json.dumps({"q": "a" * 4000})},
        }
    ],
}


@pytest.mark.parametrize(
    ("job", "billed"),
    [
        pytest.param(job_of(tools=tools(4, 4000)), 4 * 4000 // 4, id="tool definitions"),
        pytest.param(
            job_of(response_format=schema_format(8000)), 8000 // 4, id="response_format schema"
        ),
        pytest.param(
            job_of([{"role": "user", "content": "hi", "name": "n" * 64}]), 64 // 4, id="name"
        ),
        pytest.param(
            job_of(
                [
                    {"role": "user", "content": "hi"},
                    ASSISTANT_CALL,
                    {"role": "tool", "tool_call_id": "call_" + "i" * 200, "content": "ok"},
                ]
            ),
            (4000 + 200 + 200) // 4,
            id="tool calls and the ids tools answer",
        ),
        pytest.param(
            job_of(with_part({"type": "image_url", "image_url": {"url": png(4000, 3000)}})),
            # Anthropic's: fitted into 1568 × 1176, 1568 × 1176 / 750 (OpenAI's 4 tiles: 765)
            math.ceil(1568 * 1176 / 750),
            id="an inline image by its size",
        ),
        pytest.param(
            job_of(with_part({"type": "image_url", "image_url": {"url": "https://x.test/a"}})),
            media.UNKNOWN_IMAGE_TOKENS,
            id="an image by URL at the most any provider charges",
        ),
        pytest.param(
            job_of(
                with_part({"type": "file", "file": {"file_data": pdf(7), "filename": "f" * 200}})
            ),
            7 * media.PDF_PAGE_TOKENS + 200 // 4,
            id="a PDF by its pages, and its filename",
        ),
    ],
)
def test_each_billed_part_of_a_request_is_in_its_input_estimate(
    job: JobRequest, billed: int
) -> None:
    assert estimate(job) - estimate(job_of()) >= billed


def test_a_prediction_is_reserved_as_output_it_may_be_billed_as() -> None:
    """OpenAI bills a prediction's rejected tokens at completion rates: it counts on top of
    the output allowance, not at the (cheaper) input price."""
    plain = job_of(max_tokens=100)
    predicted = job_of(max_tokens=100, prediction={"type": "content", "content": "p" * 8000})
    assert tokens.output_allowance(predicted) - tokens.output_allowance(plain) >= 8000 // 4


def test_tool_use_adds_the_system_prompt_providers_bill_for_it() -> None:
    """Anthropic adds a tool-use system prompt of up to 346 tokens to a request with tools
    (a structured answer is a forced tool there)."""
    small = [{"type": "function", "function": {"name": "f"}}]
    assert estimate(job_of(tools=small)) - estimate(job_of()) >= tokens.TOOL_USE_SYSTEM_TOKENS
    assert estimate(job_of(response_format=schema_format(0))) - estimate(job_of()) >= 346


def cost_config(**tenant: Any) -> HeadwayConfig:
    return config_of(
        {
            "providers": {"p": {"type": "openai", "base_url": "http://127.0.0.1:1/v1"}},
            "routes": {
                "summarize": {
                    "kind": "chat",
                    "deployments": [
                        {
                            "provider": "p",
                            "model": "m",
                            "input_usd_per_mtok": IN_USD_PER_MTOK,
                            "output_usd_per_mtok": OUT_USD_PER_MTOK,
                        }
                    ],
                }
            },
            "tenants": {"demo": tenant},
        }
    )


async def test_max_cost_usd_holds_the_tools_a_job_carries() -> None:
    provider = ScriptedProvider("p")
    harness = pipeline_for(cost_config(), {"p": provider})
    job = heavy_job("j1", "demo")
    job["max_cost_usd"] = 0.05
    await harness.pipeline.handle(harness.record(job))
    (result,) = harness.results()
    assert result["status"] == "rejected" and result["error"]["code"] == "cost_limit_exceeded"
    assert provider.calls == []


class RecordingAdmission:
    """Stands in for admission: admits every job, keeps the estimate it was asked to hold."""

    def __init__(self) -> None:
        self.held: list[int] = []

    def limits(self, job: JobRequest, tenant: Any) -> bool:
        return True

    async def admit(self, job: JobRequest, tenant: Any, route: Any, billed: BilledInput) -> Any:
        self.held.append(billed.tokens)
        return Ticket(job.tenant)

    async def release(self, ticket: Any, used: int | None, *, started: bool) -> None:
        return None


async def test_quotas_and_budgets_are_asked_to_hold_the_whole_billed_input() -> None:
    admission = RecordingAdmission()
    provider = ScriptedProvider("p")
    harness = pipeline_for(cost_config(tpm=10**9), {"p": provider}, admission=admission)
    job = heavy_job("j1", "demo")
    await harness.pipeline.handle(harness.record(job))
    assert admission.held == [estimate(JobRequest.model_validate(job))]
    assert admission.held[0] >= 16 * 2000 // 4


async def test_reported_usage_with_tools_teaches_the_calibration_nothing_false() -> None:
    """The executor's estimate (what a deployment's tpm holds, and what reported usage is
    compared with) is the same whole estimate: a provider reporting exactly what the tools
    cost leaves the ratio at 1, where an estimate without them would learn 4× for every job."""
    job = heavy_job("j1", "demo")
    billed = estimate(JobRequest.model_validate(job))
    provider = ScriptedProvider("p", ChatResponse("ok", "stop", billed, 2))
    harness = pipeline_for(cost_config(), {"p": provider})
    await harness.pipeline.handle(harness.record(job))
    assert harness.results()[0]["status"] == "succeeded"
    assert harness.pipeline.calls.router.calibration.ratio("p:m") == pytest.approx(1.0)
