"""Red-team specs on the schema check (issue 33 §2, second look): a ``$schema`` inside a schema
never swaps the worker's linear, clocked validator for jsonschema's own.

jsonschema picks a subschema's validator class from its ``$schema`` when it descends (``evolve``
calls ``validator_for``): a subschema, or the root reached again by ``$ref: "#"``, naming any
dialect jsonschema knows (draft 2020-12 itself included) was checked with Python's backtracking
``re`` and off the clock — ``^(x+)+y$`` against 26 characters held the GIL, so the event loop
and every tenant's jobs, for seconds (each character doubles it), and a fanning-out schema ran
past its budget. Intake admits every such schema (RE2 compiles the pattern; the dialect is known).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from schemas import json_schema
from workers.content import schema_check, structured

HOSTILE = "^(x+)+y$"
ANSWER = {"a": "x" * 26}  # 2^26 steps for a backtracking engine: seconds; RE2: microseconds
DIALECTS = [
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2019-09/schema",
    "http://json-schema.org/draft-07/schema#",
    "http://json-schema.org/draft-06/schema#",
    "http://json-schema.org/draft-04/schema#",
    "http://json-schema.org/draft-03/schema#",
]


def nested(dialect: str) -> dict[str, Any]:
    """The hostile pattern in a subschema naming its own dialect."""
    inner = {"$schema": dialect, "type": "string", "pattern": HOSTILE}
    return {"type": "object", "properties": {"a": inner}}


def root_again(dialect: str) -> dict[str, Any]:
    """The dialect at the root (as many real schemas have it), the root reached by ``$ref``."""
    return {
        "$schema": dialect,
        "type": ["object", "string"],
        "properties": {"a": {"$ref": "#"}},
        "pattern": HOSTILE,
    }


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("shape", [nested, root_again])
async def test_a_dialect_named_inside_a_schema_keeps_patterns_linear(
    dialect: str, shape: Any
) -> None:
    schema = shape(dialect)
    json_schema.check(schema, "schema")  # intake admits it
    started = time.monotonic()
    checked = await structured.check(json.dumps(ANSWER), schema)
    assert time.monotonic() - started < 1.0
    assert checked.error is not None and "does not match '^(x+)+y$'" in checked.error


@pytest.mark.parametrize("dialect", DIALECTS[:3])
async def test_a_dialect_named_inside_a_schema_keeps_every_keyword_on_the_clock(
    dialect: str,
) -> None:
    levels = 22  # 2^22 evaluations of the last definition: far past the budget
    defs: dict[str, Any] = {
        f"d{i}": {
            "$schema": dialect,
            "allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}],
        }
        for i in range(levels)
    }
    defs[f"d{levels}"] = {"type": "object"}
    schema = {"$defs": defs, "$ref": "#/$defs/d0"}
    json_schema.check(schema, "schema")
    started = time.monotonic()
    checked = await structured.check("{}", schema, schema_check.Checks(budget_s=0.3))
    assert time.monotonic() - started < 2.0
    assert checked.unusable
    assert checked.error == "the schema cannot be applied: applying it took longer than 0.3 s"


# -- RE2 is linear in time, not small in memory: a pattern's program is bounded ------------------

#: 20 bytes of schema; RE2 (8 MiB default budget) compiled it to ~3.7 MB, holding the GIL 0.13 s
HUGE = "(?:\\pL|\\pN){300}"


def test_one_pattern_whose_program_is_too_large_is_refused_at_intake() -> None:
    with pytest.raises(ValueError, match=r"schema\.pattern: .* is not a pattern RE2 matches"):
        json_schema.check({"type": "string", "pattern": HUGE}, "schema")


def test_a_schemas_patterns_are_bounded_in_all() -> None:
    # each compiles alone; 40 of them held ~150 MB (300 distinct ones: past 1 GB, an OOM-kill)
    many = {f"p{i}": {"type": "string", "pattern": f"(?:\\pL|\\pN){{40}}{i}"} for i in range(40)}
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"schema: its patterns compile to more than"):
        json_schema.check({"type": "object", "properties": many}, "schema")
    assert time.monotonic() - started < 1.0


def test_realistic_patterns_are_still_admitted() -> None:
    for pattern in [
        "^[\\p{L} '-]{1,100}$",  # 120,001 instructions: the largest kind admitted
        "^[\\w.+-]{1,64}@[\\w-]{1,63}(\\.[\\w-]{1,63}){1,8}$",
        "^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(?:\\.\\d+)?(?:Z|[+-]\\d{2}:\\d{2})$",
        "^[^\\n]{1,1000}$",
    ]:
        json_schema.check({"type": "string", "pattern": pattern}, "schema")


def test_compiled_patterns_kept_are_bounded() -> None:
    # every kept pattern is at most its memory budget: the cache holds at most their product
    assert json_schema.regex.cache_info().maxsize is not None
    kept = json_schema.regex.cache_info().maxsize * json_schema.PATTERN_MEMORY
    assert kept <= 128 * 1024 * 1024


# -- a check's budget is its own running time, not its wait behind other tenants' checks ---------


async def test_a_check_waiting_behind_other_checks_is_not_judged_over_its_budget() -> None:
    # another tenant's slow checks (a 20,000-value schema's own check takes ~1 s; 20 of them
    # queued held the pool 14 s) filled the pool: the victim's trivial answer check, its clock
    # started when it was queued, was "took longer than 2 s" — its job failed invalid_output
    checks = schema_check.Checks(budget_s=0.5, threads=1)
    others = asyncio.ensure_future(checks.run(lambda: time.sleep(1.0)))
    await asyncio.sleep(0.05)
    checked = await structured.check('{"a": 1}', {"type": "object"}, checks)
    await others
    assert not checked.unusable, checked.error
    assert checked.error is None


async def test_one_tenants_checks_queue_behind_each_other_not_in_front_of_another_tenants() -> None:
    checks = schema_check.Checks(budget_s=2.0, threads=2)
    hostile = [
        asyncio.ensure_future(checks.run(lambda: time.sleep(0.4), tenant="mallory"))
        for _ in range(10)
    ]
    await asyncio.sleep(0.05)
    started = time.monotonic()
    checked = await structured.check('{"a": 1}', {"type": "object"}, checks, tenant="victim")
    waited = time.monotonic() - started
    await asyncio.gather(*hostile)
    assert checked.error is None
    assert waited < 0.3, waited  # FIFO: behind 10 × 0.4 s on 2 threads, ~2 s
    assert not checks._turns  # nothing kept per tenant once its checks are done
