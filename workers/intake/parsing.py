"""Intake: bytes from a job topic → a valid JobRequest, or a clean description of what is wrong.

Never raises on any input. Three outcomes:
- :class:`ValidJob` — parsed and validated;
- :class:`InvalidJob` — a JSON object that fails validation; carries ``job_id``/``tenant`` when
  they can be read, so the worker can publish a ``rejected`` result naming the field;
- :class:`Unreadable` — not a JSON object at all (binary, truncated, too large, …): DLQ only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import sys
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas.content import STRUCTURE_ONLY
from schemas.jobs import PRINTABLE_PATTERN, TENANT_PATTERN, JobRequest

_JOB_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_TENANT = re.compile(TENANT_PATTERN)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_PRINTABLE = re.compile(PRINTABLE_PATTERN)
MAX_BATCH_ID = 128
MAX_REPORTED_ERRORS = 3
# the fewest bytes one embedding value takes in a result's JSON ("-0.1234," and the like): a
# job whose inputs × dimensions cannot fit the result limit even so is refused before its call
MIN_EMBEDDING_VALUE_BYTES = 8


#: JSON values in one job (objects, arrays, strings, numbers… each counts one): what bounds the
#: free-form fields together (schemas, tools' parameters, prediction, metadata); a job at every
#: other limit holds far fewer
MAX_JSON_VALUES = 65_536
#: nesting of a job's JSON (a schema's 64 levels sit 5 deep): deeper cannot be published back
#: (pydantic's serializer stops near 255 levels) and costs every recursive reader
MAX_JSON_DEPTH = 100
#: what a parsed object holds beyond its JSON (measured with tracemalloc: a message or a
#: content part becomes a model of ~500 bytes); its keys and values are counted as they are
OBJECT_BYTES = 512
POINTER_BYTES = 8
#: a record at least this large is parsed in a thread (a 64 KiB job parses in ~1 ms, the
#: largest shapes intake admits in ~35 ms; the hand-off costs ~0.1 ms)
PARSE_ASIDE_BYTES = 64 * 1024
#: the thread they are parsed in: one per process (a worker's fetcher takes one record at a
#: time), apart from the loop's default executor (name lookups)
_PARSER = concurrent.futures.ThreadPoolExecutor(1, "headway-parse")
JOB_BYTES = 4096  # a JobRequest's own model, whatever it holds (~2.4 KB measured)
#: what an invalid job keeps of its record: enough to answer it (``Identity.from_raw``)
ANSWERED_KEYS = ("batch_id", "kind", "route", "metadata")


@dataclass(frozen=True, slots=True)
class ValidJob:
    job: JobRequest
    parsed_bytes: int = 0  # what the parsed job holds in memory, estimated


@dataclass(frozen=True, slots=True)
class InvalidJob:
    reason: str
    job_id: str | None
    tenant: str | None
    raw: dict[str, Any]  # the record's fields an answer names (ANSWERED_KEYS), not all of it
    parsed_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Unreadable:
    reason: str


Intake = ValidJob | InvalidJob | Unreadable


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a record says it is from, read without validating the job: enough to spill it
    (the job is validated when it is taken back to run)."""

    tenant: str
    job_id: str
    batch_id: str | None


def identity_of(value: bytes | None, max_bytes: int) -> Identity | None:
    """The record's tenant, job_id and batch_id when all three are well-formed (None: the
    record needs the full parse)."""
    if not value or len(value) > max_bytes:
        return None
    try:
        raw = json.loads(value)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    job_id, tenant = _identity(raw)
    batch_id = raw.get("batch_id")
    if job_id is None or tenant is None:
        return None
    if batch_id is not None and not (
        isinstance(batch_id, str)
        and len(batch_id) <= MAX_BATCH_ID
        and _PRINTABLE.match(batch_id)
        and not _has_lone_surrogate(batch_id)
    ):
        return None
    return Identity(tenant, job_id, batch_id)


def tenant_of(intake: Intake | None) -> str:
    """The tenant the record names ('' when it names none that can be read)."""
    if isinstance(intake, ValidJob):
        return intake.job.tenant
    if isinstance(intake, InvalidJob):
        return intake.tenant or ""
    return ""


def job_id_of(intake: Intake | None) -> str | None:
    """The job's id, where the record names one (for log lines)."""
    if isinstance(intake, ValidJob):
        return intake.job.job_id
    if isinstance(intake, InvalidJob):
        return intake.job_id
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _DuplicateKeys:
    """object_pairs_hook that remembers the first duplicated key instead of silently keeping one."""

    __slots__ = ("duplicate",)

    def __init__(self) -> None:
        self.duplicate: str | None = None

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs) and self.duplicate is None:
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self.duplicate = key
                    break
                seen.add(key)
        return result


def describe_validation_error(error: ValidationError) -> str:
    """'messages.0.role: Input should be …; unknown field 'foo'' — every part names its field."""
    parts = []
    for item in error.errors()[:MAX_REPORTED_ERRORS]:
        where = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown field '{where}'")
            continue
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    extra = len(error.errors()) - MAX_REPORTED_ERRORS
    if extra > 0:
        parts.append(f"and {extra} more")
    return "; ".join(parts)


def _identity(raw: dict[str, Any]) -> tuple[str | None, str | None]:
    job_id, tenant = raw.get("job_id"), raw.get("tenant")
    job_id = job_id if isinstance(job_id, str) and _JOB_ID.match(job_id) else None
    # only a well-formed name is answered: a result is stored and published under it
    tenant = tenant if isinstance(tenant, str) and _TENANT.match(tenant) else None
    return job_id, tenant


def _has_lone_surrogate(value: Any) -> bool:
    """Whether any string in ``value`` (keys included) holds a lone UTF-16 surrogate: written
    out as UTF-8 by the JSON encoder (C speed), or, for a value nested deeper than the encoder
    goes (as deeply as ``json.loads`` reads), walked with a stack."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except RecursionError:
        return _walk_for_lone_surrogate(value)
    return False


def _walk_for_lone_surrogate(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def parse_job(value: bytes | None, max_bytes: int) -> Intake:
    if value is None:
        return Unreadable("empty value (tombstone)")
    if len(value) > max_bytes:
        return Unreadable(f"value is {len(value)} bytes; the maximum is {max_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as error:
        return Unreadable(f"not UTF-8: {error.reason} at byte {error.start}")
    hook = _DuplicateKeys()
    try:
        raw = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=hook)
    except RecursionError:
        return Unreadable("not JSON: nested too deeply")
    except ValueError as error:
        return Unreadable(f"not JSON: {error}")
    if not isinstance(raw, dict):
        return Unreadable(f"JSON {type(raw).__name__} where a JSON object was expected")
    job_id, tenant = _identity(raw)
    answered = {key: raw[key] for key in ANSWERED_KEYS if key in raw}
    parsed = _parsed_bytes(raw)
    if isinstance(parsed, str):
        reason = parsed
        small = _small(answered)
        return InvalidJob(reason, job_id, tenant, small, OBJECT_BYTES * (1 + len(small)))
    if hook.duplicate is not None:
        return InvalidJob(f"{hook.duplicate}: duplicate key", job_id, tenant, answered, parsed)
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(raw):
        return InvalidJob(
            "a string holds a lone UTF-16 surrogate", job_id, tenant, answered, parsed
        )
    try:
        # a schema's structure only: its meta-schema and patterns cost ~150 µs a node, so the
        # pipeline checks them off the event loop (workers/pipeline/preparation.py)
        job = JobRequest.model_validate(raw, context=STRUCTURE_ONLY)
    except ValidationError as error:
        return InvalidJob(describe_validation_error(error), job_id, tenant, answered, parsed)
    except RecursionError:
        return InvalidJob("nested too deeply", job_id, tenant, answered, parsed)
    too_large = _result_too_large(job, max_bytes)
    if too_large is not None:
        return InvalidJob(too_large, job_id, tenant, answered, parsed)
    return ValidJob(job, parsed)


async def parse_job_aside(value: bytes | None, max_bytes: int) -> Intake:
    """:func:`parse_job`, in a thread when the value is large (:data:`PARSE_ASIDE_BYTES`):
    the largest shapes intake admits take tens of milliseconds to parse, and a fetch of them
    parsed on the event loop would hold every tenant's jobs for seconds. In the thread, the
    loop runs between the parse's Python steps (its C steps are a few ms at most)."""
    if value is not None and PARSE_ASIDE_BYTES <= len(value) <= max_bytes:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_PARSER, parse_job, value, max_bytes)
    return parse_job(value, max_bytes)


def held_bytes(value: bytes | None, intake: Intake | None) -> int:
    """What a record and its parsed job hold in memory, estimated (what buffers count)."""
    parsed = intake.parsed_bytes if isinstance(intake, ValidJob | InvalidJob) else 0
    return len(value or b"") + parsed


def shape_refused(raw: Any) -> str | None:
    """Why a job's JSON is refused for its shape alone (too many values, too deep), or None:
    what ``headway submit`` checks of each line before a worker does."""
    parsed = _parsed_bytes(raw)
    return parsed if isinstance(parsed, str) else None


def _parsed_bytes(raw: Any) -> int | str:
    """The memory a parsed job holds, estimated from above: each JSON value's own size (a
    string of one emoji and 500,000 ASCII letters takes 2 MB, four bytes a letter), a model's
    for each object; or why its shape is refused (more than MAX_JSON_VALUES values, deeper
    than MAX_JSON_DEPTH). Level by level, stopping at a limit."""
    size = values = depth = 0
    level: list[Any] = [raw]
    size_of = sys.getsizeof
    while level:  # a level of the document at a time: its depth without a stack of pairs
        depth += 1
        if depth > MAX_JSON_DEPTH:
            return f"the job nests deeper than {MAX_JSON_DEPTH} levels; the limit"
        values += len(level)
        if values > MAX_JSON_VALUES:
            return f"the job holds more than {MAX_JSON_VALUES:,} JSON values; the limit"
        below: list[Any] = []
        for node in level:
            size += size_of(node)
            if type(node) is dict:
                size += OBJECT_BYTES + sum(map(size_of, node))
                below.extend(node.values())
            elif type(node) is list:
                below.extend(node)
        level = below
    return JOB_BYTES + size + values * POINTER_BYTES


def _small(answered: dict[str, Any]) -> dict[str, Any]:
    """The answered fields of a job too large to parse further, without its metadata (which
    may be what made it so)."""
    return {key: value for key, value in answered.items() if key != "metadata"}


def _result_too_large(job: JobRequest, max_bytes: int) -> str | None:
    """Why an embedding job's result certainly exceeds ``max_bytes``, or None (also when its
    dimensions are unknown: the result's own size is checked when it is stored)."""
    dimensions = job.params.dimensions if job.params is not None else None
    if dimensions is None or job.input is None:
        return None
    inputs = len(job.inputs)
    at_least = inputs * dimensions * MIN_EMBEDDING_VALUE_BYTES
    if at_least <= max_bytes:
        return None
    return (
        f"input: {inputs} inputs × {dimensions} dimensions make a result of at least "
        f"{at_least:,} bytes; results are limited to {max_bytes:,} bytes "
        "(HEADWAY_MAX_MESSAGE_BYTES): split the inputs across several jobs"
    )
