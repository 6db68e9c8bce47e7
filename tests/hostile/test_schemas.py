"""A job's JSON Schemas (``response_format``, tools' ``parameters``) are the producer's, so
hostile: a schema never makes a worker open a connection or a file (no ``$ref`` leaves the
schema: refused at intake, and the worker's validator has a registry that never retrieves),
never puts an exception's text into a result, and never holds the event loop (issue 33, items
1 and 2)."""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError
from referencing.exceptions import Unresolvable

from broker.config import development_config
from broker.settings import Settings
from schemas import json_schema
from schemas.jobs import JobRequest, Priority
from tests.helpers import chat_job, read_topic, running_worker
from tests.integration.test_batch_lane import lane_config, lane_settings, results_of, tolerant
from tests.unit.test_job_pipeline import answer, calls, harness
from workers.content import schema_check, schema_keywords, structured
from workers.devstack.simulator import SimulatorConfig, SimulatorServer
from workers.intake.parsing import InvalidJob, parse_job
from workers.pipeline.job_pipeline import JobPipeline

SECRET = "AKIA-not-for-your-eyes"
MAX_BYTES = 1024 * 1024


class Loopback:
    """A loopback HTTP server that serves a secret JSON document and counts who asked."""

    def __init__(self) -> None:
        self.hits = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                body = json.dumps({"credentials": SECRET}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/latest/meta-data"


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    served = Loopback()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.server.shutdown()
        served.server.server_close()
        thread.join()


@pytest.fixture
def secret_file(tmp_path: Path) -> str:
    path = tmp_path / "key.json"
    path.write_text(json.dumps({"private_key": SECRET}))
    return path.as_uri()


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


format_of = response_format


def intake_error(schema: dict[str, Any]) -> str:
    job = chat_job("hostile", params={"response_format": response_format(schema)})
    intake = parse_job(json.dumps(job).encode(), MAX_BYTES)
    assert isinstance(intake, InvalidJob), intake
    return intake.reason


# -- item 1: no $ref leaves the schema -----------------------------------------------------------

FIELD = "params.response_format: response_format.json_schema.schema"


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"$ref": "http://169.254.169.254/latest/meta-data#/nowhere"}, "$ref"),
        ({"$ref": "file:///etc/passwd"}, "$ref"),
        ({"$ref": "other.json#/a"}, "$ref"),
        ({"properties": {"a": {"items": {"$ref": "https://example.com/s.json"}}}}, "$ref"),
        ({"$defs": {"a": {"$dynamicRef": "http://127.0.0.1/x"}}}, "$dynamicRef"),
        ({"$schema": "http://127.0.0.1/my-dialect", "type": "object"}, "$schema"),
    ],
)
def test_a_reference_out_of_the_schema_is_refused_at_intake_naming_the_field(
    schema: dict[str, Any], named: str
) -> None:
    reason = intake_error(schema)
    assert reason.startswith(FIELD), reason
    assert named in reason, reason


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/a", "$defs": {"a": {"type": "object"}}},
        {"$id": "https://example.com/invoice.json", "$ref": "#/$defs/a", "$defs": {"a": {}}},
        {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"},
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"},
        {"$defs": {"node": {"anchor": True, "$dynamicAnchor": "n"}}, "$dynamicRef": "#n"},
        {"properties": {"$ref": {"type": "string"}}},  # a property that happens to be so named
    ],
)
def test_references_inside_the_schema_are_admitted(schema: dict[str, Any]) -> None:
    job = chat_job("fine", params={"response_format": response_format(schema)})
    assert not isinstance(parse_job(json.dumps(job).encode(), MAX_BYTES), InvalidJob)


async def test_checking_an_answer_never_fetches_what_a_schema_refers_to(
    loopback: Loopback, secret_file: str
) -> None:
    # a schema that reached a worker without intake's check (a record of an older headway)
    for schema in (
        {"$ref": f"{loopback.url}#/nowhere"},
        {"$ref": f"{secret_file}#/nowhere"},
        {"properties": {"a": {"$dynamicRef": loopback.url}}},
    ):
        checked = await structured.check('{"a": 1}', schema)
        assert checked.error is not None
        assert SECRET not in checked.error
        assert checked.error.startswith("the schema cannot be applied: "), checked.error
    assert loopback.hits == 0


def test_the_validators_registry_never_retrieves(loopback: Loopback, secret_file: str) -> None:
    # beneath intake's refusal and the worker's own check: the registry itself
    for target in (f"{loopback.url}#/nowhere", f"{secret_file}#/x"):
        validator = schema_keywords.Linear({"$ref": target}, registry=schema_check.NO_RETRIEVAL)
        with pytest.raises(Unresolvable) as raised:
            validator.is_valid({})
        assert SECRET not in str(raised.value)
    assert loopback.hits == 0


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/missing"},
        {"$ref": "#"},
        {"$ref": "http://127.0.0.1:9/x"},
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    ],
)
async def test_a_schema_that_cannot_be_applied_is_said_in_words_not_an_exceptions_repr(
    schema: dict[str, Any],
) -> None:
    error = (await structured.check("{}", schema)).error or ""
    assert error.startswith("the schema cannot be applied: "), error
    for leaked in ("Error(", "Unresolvable(", "PointerToNowhere(", "NoSuchResource(", "<"):
        assert leaked not in error, error


async def test_a_job_headway_cannot_process_ends_naming_the_error_type_not_its_text(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def handle(self: JobPipeline, *args: Any) -> None:
        raise LookupError(f"unresolvable: {{'credentials': '{SECRET}'}}")

    monkeypatch.setattr(JobPipeline, "handle", handle)
    settings = make_settings(database_url=sqlite_url, concurrency=1, job_partitions=1)
    async with running_worker(settings, development_config(simulator.base_url)):
        await produce(settings, [chat_job("crashes")])
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=1
        )
    [result] = results.by_key["crashes"]
    assert result["status"] == "failed" and result["error"]["code"] == "internal_error"
    assert "LookupError" in result["error"]["message"]
    assert SECRET not in json.dumps(result)


async def produce(settings: Settings, jobs: list[dict[str, Any]]) -> None:
    """Jobs as any Kafka client writes them (no client-side validation)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        topic = settings.topics.jobs(Priority.NORMAL)
        for job in jobs:
            await producer.send_and_wait(
                topic, json.dumps(job).encode(), key=job["job_id"].encode()
            )
    finally:
        await producer.stop()


async def test_a_remote_ref_job_over_a_real_broker_is_rejected_and_nothing_is_fetched(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    loopback: Loopback,
    secret_file: str,
) -> None:
    settings = make_settings(database_url=sqlite_url, job_partitions=1)
    hostile = {
        "metadata-service": {"$ref": f"{loopback.url}#/nowhere"},
        "key-file": {"type": "object", "properties": {"k": {"$ref": f"{secret_file}#/x"}}},
    }
    jobs = [
        chat_job(job_id, params={"response_format": response_format(schema)})
        for job_id, schema in hostile.items()
    ]
    jobs.append(chat_job("neighbour"))
    async with running_worker(settings, development_config(simulator.base_url)):
        await produce(settings, jobs)
        results = await read_topic(
            settings.kafka_bootstrap or "", settings.topics.results, until_keys=len(jobs)
        )
    assert results.by_key["neighbour"][0]["status"] == "succeeded"
    for job_id in hostile:
        [result] = results.by_key[job_id]
        assert result["status"] == "rejected", result
        assert result["error"]["code"] == "invalid_request"
        assert result["error"]["message"].startswith(FIELD)
        assert "$ref" in result["error"]["message"]
        assert SECRET not in json.dumps(result)
    assert loopback.hits == 0


# -- item 2: no schema holds the event loop -------------------------------------------------------

CATASTROPHIC = {"type": "string", "minLength": 28, "pattern": "^(x+)+y$"}  # backtracking: 2^28


def fan_out(levels: int) -> dict[str, Any]:
    """A small schema that evaluates its last definition 2^levels times."""
    defs: dict[str, Any] = {
        f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
        for i in range(levels)
    }
    defs[f"d{levels}"] = {"type": "object"}
    return {"$defs": defs, "$ref": "#/$defs/d0"}


async def test_a_pattern_is_matched_in_linear_time() -> None:
    started = time.monotonic()
    checked = await structured.check(json.dumps("x" * 28), CATASTROPHIC)
    assert time.monotonic() - started < 1.0
    assert checked.error == "(the answer): 'xxxxxxxxxxxxxxxxxxxxxxxxxxxx' does not match '^(x+)+y$'"
    assert (await structured.check(json.dumps("x" * 27 + "y"), CATASTROPHIC)).error is None


async def test_pattern_properties_and_the_keys_they_decide_are_matched_in_linear_time() -> None:
    hostile = "^(a+)+$"
    schema = {
        "type": "object",
        "patternProperties": {hostile: {"type": "integer"}},
        "additionalProperties": False,
        "unevaluatedProperties": False,
    }
    key = "a" * 40 + "!"
    started = time.monotonic()
    checked = await structured.check(json.dumps({key: 1}), schema)
    assert time.monotonic() - started < 1.0
    assert checked.error is not None and "match none of the patternProperties" in checked.error
    assert (await structured.check(json.dumps({"aaa": 1}), schema)).error is None
    assert (await structured.check(json.dumps({"aaa": "1"}), schema)).error is not None


async def test_unique_items_is_linear_and_still_tells_1_from_true() -> None:
    many = [{"k": i, "v": [i, str(i)]} for i in range(20_000)]
    started = time.monotonic()
    assert (await structured.check(json.dumps(many), {"uniqueItems": True})).error is None
    assert time.monotonic() - started < 10.0  # ~1 s; pairwise, 3,000 took 16 s (20,000: ~12 min)
    repeated = (await structured.check(json.dumps([*many, many[7]]), {"uniqueItems": True})).error
    assert repeated == "(the answer): item 20000 repeats an earlier item (uniqueItems)"
    assert (await structured.check("[1, 1.0]", {"uniqueItems": True})).error is not None
    assert (await structured.check("[1, true]", {"uniqueItems": True})).error is None


async def test_a_schema_whose_references_fan_out_stops_at_its_budget() -> None:
    checks = schema_check.Checks(budget_s=0.3)
    started = time.monotonic()
    checked = await structured.check("{}", fan_out(40), checks)
    assert time.monotonic() - started < 2.0
    assert checked.unusable
    assert checked.error == "the schema cannot be applied: applying it took longer than 0.3 s"


async def test_the_event_loop_turns_while_a_check_runs_out_its_budget() -> None:
    checks = schema_check.Checks(budget_s=1.0)
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.001)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    checked = await structured.check("{}", fan_out(40), checks)
    ticker.cancel()
    assert checked.unusable and len(gaps) > 100
    # the GIL changes hands every 5 ms (a busy machine's scheduler adds its own): never the 1 s
    assert max(gaps) < 0.3, max(gaps)


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "string", "pattern": "^(?=x)"}, "schema.pattern: '^(?=x)' is not a pattern RE2"),
        ({"properties": {"a": {"pattern": "(a)\\1"}}}, "schema.properties.a.pattern: '(a)\\\\1'"),
        ({"patternProperties": {"x{1001}": {}}}, "schema.patternProperties: 'x{1001}'"),
        ({"type": "thing"}, "schema: 'thing' is not valid"),
    ],
)
async def test_a_schema_a_worker_cannot_apply_is_refused_before_any_call(
    schema: dict[str, Any], named: str
) -> None:
    # a producer's client hears of it when it validates the job…
    with pytest.raises(ValidationError) as raised:
        JobRequest.model_validate(
            chat_job("j", params={"response_format": response_format(schema)})
        )
    assert named in str(raised.value)
    # …a worker before any provider call, off its event loop (intake checks the structure only)
    refused = await schema_check.CHECKS.schema_refused(response_format(schema))
    assert refused is not None and refused.startswith(FIELD) and named in refused, refused


async def test_on_fakes_a_pattern_re2_cannot_compile_ends_the_job_rejected_with_no_call() -> None:
    built = harness(answer('"x"'))
    schema = {"type": "string", "pattern": "(?<=a)b"}
    job = chat_job("j1", params={"response_format": format_of(schema)})
    await built.pipeline.handle(built.record(job))
    [result] = built.results()
    assert result["status"] == "rejected" and result["error"]["code"] == "invalid_request"
    assert result["error"]["message"].startswith(f"{FIELD}.pattern: '(?<=a)b' is not a pattern")
    assert calls(built, "primary") == 0


async def test_on_fakes_an_answer_a_schema_cannot_be_applied_to_is_not_asked_for_again() -> None:
    built = harness(answer("{}"), answer("{}"))
    schema = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}  # loops
    await built.pipeline.handle(
        built.record(chat_job("j1", params={"response_format": format_of(schema)}))
    )
    [result] = built.results()
    assert result["status"] == "failed" and result["error"]["code"] == "invalid_output"
    assert (
        "could not be checked against response_format: the schema cannot be applied: "
        in (result["error"]["message"])
    )
    assert calls(built, "primary") == 1


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        (
            {"enum": list(range(json_schema.MAX_NODES))},
            f"{FIELD}: more than {json_schema.MAX_NODES:,} JSON values; the limit",
        ),
        (
            functools.reduce(lambda inner, _: {"not": inner}, range(json_schema.MAX_DEPTH + 1), {}),
            f"nested deeper than {json_schema.MAX_DEPTH} levels; the limit",
        ),
    ],
)
def test_a_schemas_size_and_depth_are_bounded_at_intake(schema: dict[str, Any], named: str) -> None:
    assert named in intake_error(schema)


def test_intake_admits_a_schema_at_the_size_limit_without_holding_the_loop() -> None:
    schema = {"properties": {f"p{i}": {"type": "string"} for i in range(6_600)}}  # ~19,800 values
    job = chat_job("big", params={"response_format": response_format(schema)})
    value = json.dumps(job).encode()
    started = time.monotonic()
    assert not isinstance(parse_job(value, MAX_BYTES), InvalidJob)
    assert time.monotonic() - started < 0.25  # the meta-schema's ~3 s are spent off the loop


async def test_a_hostile_pattern_does_not_delay_another_tenants_job(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url, job_partitions=1)
    hostile = [
        chat_job(
            f"freeze-{i}",
            tenant="mallory",
            params={"response_format": response_format(CATASTROPHIC)},
        )
        for i in range(3)
    ]
    lookaround = chat_job(
        "lookaround",
        tenant="mallory",
        params={"response_format": response_format({"type": "string", "pattern": "(?!x)"})},
    )
    victims = [chat_job(f"victim-{i}", tenant="victim") for i in range(5)]
    async with running_worker(settings, development_config(simulator.base_url)):
        await produce(settings, [*hostile, lookaround])
        sent = time.monotonic()
        await produce(settings, victims)
        results = await read_topic(
            settings.kafka_bootstrap or "",
            settings.topics.results,
            until_keys=len(hostile) + 1 + len(victims),
            timeout_s=30,
        )
        waited = time.monotonic() - sent
    for victim in victims:
        assert results.by_key[victim["job_id"]][0]["status"] == "succeeded"
    assert waited < 10, waited  # the frozen loop took minutes
    for job in hostile:
        [result] = results.by_key[job["job_id"]]
        assert result["status"] == "failed" and result["error"]["code"] == "invalid_output"
        assert "does not match '^(x+)+y$'" in result["error"]["message"]
    [refused] = results.by_key["lookaround"]
    assert refused["status"] == "rejected" and refused["error"]["code"] == "invalid_request"
    assert refused["error"]["message"].startswith(f"{FIELD}.pattern: '(?!x)' is not a pattern RE2")
    assert simulator.stats.calls == len(hostile) * 2 + len(victims)  # asked twice; none refused


LOOPING = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}


async def test_a_batch_answer_its_schema_cannot_be_applied_to_is_not_asked_for_online(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    job = tolerant("loops", "Total?", params={"response_format": format_of(LOOPING)})
    async with SimulatorServer(SimulatorConfig(seed=8, batch_delay_s=0.3)) as sim:
        settings = lane_settings(make_settings, sqlite_url)
        async with running_worker(settings, lane_config(sim)):
            await produce(settings, [job])
            results = await results_of(settings, 1)
    [result] = results["loops"]
    assert result["status"] == "failed" and result["error"]["code"] == "invalid_output"
    assert "the schema cannot be applied: its references loop" in result["error"]["message"]
    assert sim.stats.batch_items == 1 and sim.stats.chat_calls == 0  # no online ask: no use
