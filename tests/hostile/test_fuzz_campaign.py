"""A structure-aware fuzz campaign over the newer fields — content parts, tools,
``response_format`` schemas, ``prediction``, ``metadata``, ``user``, message names, tool calls,
OpenAI Batch input lines and control commands — in process, on the functions that parse, check
and map them (thousands of cases at full size).

Every case either parses or is refused with the project's own error and a message; never
another exception, never more than :data:`BUDGET_S` of CPU (plus :data:`BUDGET_S_PER_MIB` per
MiB of input), never more than :data:`MEMORY_FACTOR` × its size (plus :data:`MEMORY_SLACK`) of
traced memory at its peak; and nothing it holds makes the process connect anywhere, look a name
up, make a ``urllib`` request or open a canary (``tests/hostile/watch.py``).

The cases come from ``tests/hostile/generators.py``, seeded by ``HEADWAY_FUZZ_SEED`` (a failure
names the seed and the case); ``HEADWAY_FUZZ_FULL=1`` runs the full sizes (docs/reliability.md).
"""

from __future__ import annotations

import gc
import json
import os
import re
import socket
import time
import tracemalloc
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from broker.errors import ProviderError
from schemas.control import ControlCommand
from tests.hostile.commands import batch_file, control
from tests.hostile.generators import Fuzz, Targets
from tests.hostile.watch import watching
from workers.calls import tokens
from workers.cli.submission import Overrides, parse_lines
from workers.content import schema_check, structured
from workers.content.features import needs
from workers.devstack.simulator.answers import input_tokens as simulated_input
from workers.devstack.simulator.answers import instance
from workers.intake.parsing import InvalidJob, Unreadable, ValidJob, parse_job, parse_job_aside
from workers.providers import anthropic, gemini, openai
from workers.providers.base import ChatCall

FUZZ_SEED = int(os.environ.get("HEADWAY_FUZZ_SEED", "33"))
FULL = os.environ.get("HEADWAY_FUZZ_FULL", "") not in ("", "0")
CASES = 1000 if FULL else 100
MAX_BYTES = 1024 * 1024  # HEADWAY_MAX_MESSAGE_BYTES's default
BUDGET_S = 0.05
BUDGET_S_PER_MIB = 0.04  # parsing JSON is linear: a large input may take this much more
MEMORY_FACTOR = 24  # what a parsed JSON value may take per byte of its text, at its peak
MEMORY_SLACK = 4 * 1024 * 1024
#: a check run off the loop (a schema's own check, an answer's): the loop's CPU, and in all
LOOP_BUDGET_S = 0.05
CHECK_WALL_S = schema_check.BUDGET_S + 1.0
#: ``headway submit`` checks a line on its own thread (no event loop to hold): a schema's
#: meta-schema check included, within what a worker gives that check
CLI_LINE_S = schema_check.BUDGET_S
SEED = f"(HEADWAY_FUZZ_SEED={FUZZ_SEED})"
#: what an exception's repr or a traceback looks like inside a message
REPR = re.compile(r"Traceback|\b[A-Z]\w*(Error|Exception)\(|<[\w.]+ object at 0x")


@dataclass
class Figures:
    """What a layer of the campaign saw (printed under ``pytest -s``)."""

    name: str
    cases: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    slowest_s: float = 0.0
    longest_s: float = 0.0  # wall time of a check run off the loop
    peak_bytes: int = 0
    violations: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def report(self) -> None:
        """Print the figures; fail naming the first cases out of bounds, if any."""
        print(
            f"fuzz {self.name} {SEED}: {self.cases} cases {dict(sorted(self.outcomes.items()))}, "
            f"max CPU per case {self.slowest_s * 1000:.1f} ms in the calling thread (the "
            f"loop's, for checks run off it: {self.longest_s:.2f} s at most in all), "
            f"max peak memory {self.peak_bytes / 2**20:.1f} MiB, "
            f"out of bounds {len(self.violations)}"
        )
        assert not self.violations, f"{len(self.violations)} cases out of bounds: " + "; ".join(
            self.violations[:8]
        )


@pytest.fixture
def targets(tmp_path: Path) -> Targets:
    canary = tmp_path / "canary-secret.json"
    canary.write_text('{"secret": "CANARY-FILE"}')
    return Targets(http="http://127.0.0.1:9/canary.json", file=str(canary))


@pytest.fixture
def fuzz(targets: Targets) -> Fuzz:
    return Fuzz(FUZZ_SEED, targets)


@pytest.fixture
def no_reach(targets: Targets) -> Iterator[None]:
    """Nothing the cases hold may connect, look up, request or open a canary: checked after
    the layer (and refused as it happens)."""
    with watching(paths=(targets.file, "/etc/passwd", "/x.jar")) as watch:
        yield
    assert not watch.seen, f"reached out: {watch.seen[:5]} {SEED}"


def test_the_watch_refuses_and_records_a_connection_a_request_and_an_open_not_allowed(
    targets: Targets,
) -> None:
    """The campaign's eyes: what the audit hook sees is refused and recorded (so a property
    of "nothing reached" can fail)."""
    with watching(endpoints={("127.0.0.1", 1)}, paths=(targets.file,)) as watch:
        with socket.socket() as sock, pytest.raises(PermissionError):
            sock.connect(("127.0.0.1", 9))
        with pytest.raises(PermissionError):
            socket.getaddrinfo("169.254.169.254", 80)
        with pytest.raises(PermissionError):
            urllib.request.urlopen(targets.http, timeout=1)
        with pytest.raises(PermissionError), open(targets.file):
            pass
    assert watch.seen == [
        "connect 127.0.0.1:9",
        "lookup 169.254.169.254:80",
        f"urllib {targets.http}",
        f"open {targets.file}",
    ]


def measured(
    figures: Figures, case: str, size: int, run: Callable[[], Any], budget_s: float = BUDGET_S
) -> Any:
    """``run()``'s value, or the exception it raised (a violation, as is going beyond the CPU
    and memory bounds of an input of ``size`` bytes)."""
    gc.collect()
    started = time.thread_time()
    try:
        value = run()
    except Exception as error:
        figures.violations.append(f"{case}: raised {type(error).__name__}: {str(error)[:200]}")
        return error
    spent = time.thread_time() - started
    figures.slowest_s = max(figures.slowest_s, spent)
    budget = budget_s + BUDGET_S_PER_MIB * size / 2**20
    if spent > budget:
        figures.violations.append(
            f"{case}: {spent * 1000:.0f} ms of CPU (budget {budget * 1000:.0f})"
        )
    traced(figures, case, size, run)
    return value


def traced(figures: Figures, case: str, size: int, run: Callable[[], Any]) -> None:
    """``run()`` within the memory bound of an input of ``size`` bytes, at its peak."""
    gc.collect()
    tracemalloc.start()
    try:
        run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    figures.peak_bytes = max(figures.peak_bytes, peak)
    bound = MEMORY_FACTOR * size + MEMORY_SLACK
    if peak > bound:
        figures.violations.append(
            f"{case}: {peak / 2**20:.1f} MiB at peak (bound {bound / 2**20:.1f})"
        )


async def off_the_loop(figures: Figures, case: str, work: Callable[[], Awaitable[Any]]) -> Any:
    """``await work()``'s value (or the exception it raised: a violation), within
    :data:`LOOP_BUDGET_S` of CPU on the event loop's thread and :data:`CHECK_WALL_S` in all."""
    started, cpu = time.perf_counter(), time.thread_time()
    try:
        value = await work()
    except Exception as error:
        figures.violations.append(f"{case}: raised {type(error).__name__}: {str(error)[:200]}")
        return error
    on_loop, wall = time.thread_time() - cpu, time.perf_counter() - started
    figures.slowest_s = max(figures.slowest_s, on_loop)
    figures.longest_s = max(figures.longest_s, wall)
    if on_loop > LOOP_BUDGET_S or wall > CHECK_WALL_S:
        figures.violations.append(f"{case}: {on_loop * 1000:.0f} ms on the loop, {wall:.1f} s")
    return value


def _jobs(fuzz: Fuzz) -> Iterator[tuple[str, bytes]]:
    for index in range(CASES):
        yield f"case {index} {SEED}", fuzz.job(f"f-{index}", "acme")


async def test_every_hostile_job_record_is_admitted_or_refused_with_a_reason_within_bounds(
    fuzz: Fuzz, no_reach: None
) -> None:
    """Intake as a worker's fetch runs it: the record parsed (a large one in a thread: the loop
    within its CPU budget either way; memory within bounds), then a schema's own check (off
    the loop); refused with a reason in words, never an exception's repr."""
    figures = Figures("job records")
    for case, value in _jobs(fuzz):
        figures.cases += 1
        # as a worker's fetch parses it: a large record in a thread, a small one on the loop
        intake = await off_the_loop(figures, case, partial(parse_job_aside, value, MAX_BYTES))
        traced(figures, case, len(value), partial(parse_job, value, MAX_BYTES))
        if isinstance(intake, ValidJob):
            params = intake.job.params
            response_format = params.response_format if params is not None else None
            refused = await off_the_loop(
                figures, case, partial(schema_check.CHECKS.schema_refused, response_format)
            )
            if isinstance(refused, str):
                assert refused.strip() and not REPR.search(refused), (case, refused)
            figures.count("refused by the schema check" if refused else "admitted")
        elif isinstance(intake, InvalidJob):
            assert intake.reason.strip() and not REPR.search(intake.reason), (case, intake.reason)
            figures.count("refused")
        elif isinstance(intake, Unreadable):
            assert intake.reason.strip(), case
            figures.count("unreadable")
    figures.report()
    assert figures.outcomes.get("admitted", 0) > CASES // 10, f"too few valid cases {SEED}"


def _wire_bodies(job: Any) -> Iterator[Callable[[], Any]]:
    messages = [m.model_dump(mode="json", exclude_none=True) for m in job.messages or ()]
    call = ChatCall("m", messages, tokens.call_params(job), job.job_id)
    yield lambda: tokens.job_input(job, messages)
    yield lambda: needs(job, messages)
    yield lambda: openai.chat_body(call, model="m")
    yield lambda: anthropic.messages_body(call)
    yield lambda: gemini.generate_body(call)


def _refusing(body: Callable[[], Any]) -> Callable[[], Any]:
    """``body`` answering a refusal by the project's provider error as its value."""

    def attempt() -> Any:
        try:
            return body()
        except ProviderError as error:
            return error

    return attempt


def _billed(job: Any) -> int:
    """What the simulator, billing like the providers, bills the job's OpenAI-wire request as
    input (its messages, tools and response format)."""
    messages = [m.model_dump(mode="json", exclude_none=True) for m in job.messages or ()]
    body = openai.chat_body(ChatCall("m", messages, tokens.call_params(job)))
    return simulated_input(messages, body.get("tools"), body.get("response_format"))


def test_valid_hostile_jobs_are_estimated_and_mapped_to_every_wire_or_refused_within_bounds(
    fuzz: Fuzz, no_reach: None
) -> None:
    """… and the estimate a reservation holds covers what the provider bills as input."""
    figures = Figures("wire mapping")
    for case, value in _jobs(fuzz):
        intake = parse_job(value, MAX_BYTES)
        if not isinstance(intake, ValidJob):
            continue
        messages = [m.model_dump(mode="json", exclude_none=True) for m in intake.job.messages or ()]
        estimate, billed = tokens.job_input(intake.job, messages), _billed(intake.job)
        if estimate < billed:
            figures.violations.append(f"{case}: {estimate} tokens reserved, {billed} billed")
        for step, body in enumerate(_wire_bodies(intake.job)):
            figures.cases += 1
            outcome = measured(figures, f"{case} step {step}", len(value), _refusing(body))
            if isinstance(outcome, ProviderError):  # a feature a wire cannot take, said so
                assert str(outcome).strip(), case
                figures.count(f"refused by step {step}")
            elif not isinstance(outcome, Exception):
                figures.count(f"mapped by step {step}")
    figures.report()


def _admitted(schema: dict[str, Any]) -> bool:
    """Whether a job carrying ``schema`` passes intake and its schema check."""
    response_format = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    job = {
        "job_id": "s",
        "tenant": "acme",
        "kind": "chat",
        "route": "r",
        "messages": [{"role": "user", "content": "x"}],
        "params": {"response_format": response_format},
    }
    intake = parse_job(json.dumps(job).encode(), MAX_BYTES)
    return (
        isinstance(intake, ValidJob)
        and schema_check._refused(json.dumps(response_format, sort_keys=True)) is None
    )


def _answers(schema: dict[str, Any]) -> Iterator[str]:
    """What a model might write: what the simulator writes, and strings made to hurt."""
    yield json.dumps(instance(schema))
    for length in (16, 24, 28):
        yield json.dumps({"a": "x" * length})
        yield json.dumps({"x" * length: "v"})
    yield json.dumps({"summary": "a" * 1000})


async def test_answers_are_checked_against_hostile_schemas_without_reaching_out_or_stalling(
    fuzz: Fuzz, no_reach: None
) -> None:
    """Every schema the generator makes, admitted at intake or not (a record intake saw before
    a check existed still reaches the checker), against what a model might write."""
    figures = Figures("structured answers")
    for index in range(CASES // 3):
        case = f"schema {index} {SEED}"
        try:
            schema = json.loads(fuzz.dumps(fuzz.schema()))
        except RecursionError:  # deeper than any JSON reader takes: no job carries it
            continue
        if not isinstance(schema, dict):
            continue
        figures.count("admitted" if _admitted(schema) else "refused at intake")
        for answer in _answers(schema):
            figures.cases += 1
            checked = await off_the_loop(figures, case, partial(structured.check, answer, schema))
            if not isinstance(checked, structured.Checked):
                continue  # raised: a violation already
            if checked.error is None:
                figures.count("valid answer")
                continue
            figures.count("schema unusable" if checked.unusable else "invalid answer")
            assert not REPR.search(checked.error), (case, checked.error[:300])
    figures.report()


def test_openai_batch_lines_each_become_a_job_or_a_reason_naming_their_line(
    fuzz: Fuzz, no_reach: None
) -> None:
    """Each line alone: a job or one error naming line 1, within bounds (:data:`CLI_LINE_S`);
    no key of an OpenAI Batch line dropped. Each file whole: every line a job or its error, no
    id twice."""
    figures = Figures("OpenAI Batch lines")
    for number in range(max(1, CASES // 30)):
        lines = batch_file(fuzz, 30, f"file{number}")
        for index, line in enumerate(lines, start=1):
            case = f"file {number} line {index} {SEED}"
            figures.cases += 1
            read = partial(parse_lines, [line], Overrides(tenant="acme"))
            parsed = measured(figures, case, len(line), read, CLI_LINE_S)
            if isinstance(parsed, Exception):
                continue  # raised: a violation already
            assert len(parsed.jobs) + len(parsed.errors) == 1, case
            for error in parsed.errors:
                assert error.startswith("line 1: ") and error[8:].strip(), (case, error)
                assert not REPR.search(error), (case, error)
            figures.count("job" if parsed.jobs else "refused")
            if parsed.jobs and _extra_keys(line):
                figures.violations.append(f"{case}: keys {_extra_keys(line)} dropped")
        whole = parse_lines(lines, Overrides(tenant="acme"))
        assert len(whole.jobs) + len(whole.errors) == sum(1 for x in lines if x.strip())
        ids = [job.job_id for job in whole.jobs]
        assert len(ids) == len(set(ids)), f"file {number}: one id, two jobs {SEED}"
    figures.report()


def _extra_keys(line: str) -> set[str]:
    """The keys of an OpenAI Batch line beyond its format's four."""
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError):
        return set()
    if not isinstance(raw, dict) or "custom_id" not in raw:
        return set()
    return set(raw) - {"custom_id", "method", "url", "body"}


def _read_command(value: bytes) -> ControlCommand | ValidationError:
    try:
        return ControlCommand.model_validate_json(value)
    except ValidationError as error:
        return error


def test_control_commands_are_read_or_refused_by_the_schema_within_bounds(
    fuzz: Fuzz, no_reach: None
) -> None:
    figures = Figures("control commands")
    for index in range(CASES):
        value, _ = control(fuzz, "acme", "b", "s3cret")
        case = f"command {index} {SEED}: {value[:120]!r}"
        figures.cases += 1
        outcome = measured(figures, case, len(value), partial(_read_command, value))
        if isinstance(outcome, ValidationError):
            assert outcome.errors(), case
            figures.count("refused")
        else:
            figures.count(outcome.action)
    figures.report()
