"""A job's JSON Schemas (``response_format``, tools' ``parameters``) are the producer's, so
hostile: a schema never makes a worker open a connection or a file (no ``$ref`` leaves the
schema: refused at intake, and the worker's validator has a registry that never retrieves),
never puts an exception's text into a result, and never holds the event loop (issue 33, items
1 and 2)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from broker.config import development_config
from broker.settings import Settings
from schemas.jobs import Priority
from tests.helpers import chat_job, read_topic, running_worker
from workers.content import structured
from workers.devstack.simulator import SimulatorServer
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


def test_checking_an_answer_never_fetches_what_a_schema_refers_to(
    loopback: Loopback, secret_file: str
) -> None:
    # a schema that reached a worker without intake's check (a record of an older headway)
    for schema in (
        {"$ref": f"{loopback.url}#/nowhere"},
        {"$ref": f"{secret_file}#/nowhere"},
        {"properties": {"a": {"$dynamicRef": loopback.url}}},
    ):
        checked = structured.check('{"a": 1}', schema)
        assert checked.error is not None
        assert SECRET not in checked.error
        assert checked.error.startswith("the schema cannot be applied: "), checked.error
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
def test_a_schema_that_cannot_be_applied_is_said_in_words_not_an_exceptions_repr(
    schema: dict[str, Any],
) -> None:
    error = structured.check("{}", schema).error or ""
    assert error.startswith("the schema cannot be applied: "), error
    for leaked in ("Error(", "Unresolvable(", "PointerToNowhere(", "NoSuchResource(", "<"):
        assert leaked not in error, error


async def test_a_job_headway_cannot_process_ends_naming_the_error_type_not_its_text(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def handle(self: JobPipeline, record: Any, intake: Any = None) -> None:
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
