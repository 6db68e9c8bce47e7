"""Found by the fuzz campaign: the bundled simulator writes the smallest instance of a job's
schema as its answer, and took ``minLength``/``minItems`` literally — a schema saying
``minLength: 1000000000`` (valid JSON Schema, admitted at intake) made it build a 1 GB string
on the event loop it shares with everything in the process (the demo, the tests' workers); a
non-integer bound raised out of the handler. It writes at most a small instance now, whatever
the bounds say (an answer that then fails the schema is the worker's to report)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from workers.devstack.simulator.answers import MAX_INSTANCE_CHARS, MAX_INSTANCE_ITEMS, instance

HUGE = [
    pytest.param(value, id=name)
    for name, value in [
        ("1e9", 10**9),
        ("2to63", 2**63),
        ("1e400", 10**400),
        ("1.5", 1.5),
        ("-1", -1),
        ("text", "7"),
        ("null", None),
        ("true", True),
        ("list", []),
        ("object", {}),
    ]
]


@pytest.mark.parametrize("bound", HUGE)
@pytest.mark.parametrize(
    ("kind", "keyword"), [("string", "minLength"), ("array", "minItems"), ("object", "x")]
)
def test_the_simulator_writes_a_small_instance_whatever_a_schemas_bounds_say(
    kind: str, keyword: str, bound: Any
) -> None:
    schema = {
        "type": "object",
        "required": ["a"],
        "properties": {"a": {"type": kind, keyword: bound}},
    }
    started = time.monotonic()
    value = instance(schema)
    assert time.monotonic() - started < 0.1
    assert len(json.dumps(value)) <= MAX_INSTANCE_CHARS + 8 * MAX_INSTANCE_ITEMS + 16


def test_the_simulator_writes_what_a_schema_asks_for_up_to_its_limits() -> None:
    leaf = {"type": "string", "pattern": "^(x+)+y$", "minLength": 28}
    schema = {"type": "object", "required": ["a"], "properties": {"a": leaf}}
    assert instance(schema) == {"a": "x" * 28}  # a model writes what the schema asks for
    assert instance({"type": "array", "minItems": 3}) == [{}, {}, {}]


def test_the_simulator_writes_a_small_instance_of_nested_arrays() -> None:
    schema: dict[str, object] = {"type": "string", "minLength": 10**6}
    for _ in range(16):
        schema = {"type": "array", "minItems": 10**6, "items": schema}
    assert len(json.dumps(instance(schema))) <= MAX_INSTANCE_ITEMS**2 * (MAX_INSTANCE_CHARS + 64)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "items": True, "minItems": 2},
        {"type": "object", "properties": {"a": False}, "required": ["a"]},
        {"type": "array", "items": ["not", "a", "schema"], "minItems": 1},
        {"anyOf": "x"},
        {"enum": "abc"},
        {"type": "object", "required": "a"},
        {"type": "object", "required": [7, "a"], "properties": {"a": None}},
        True,
        None,
        ["x"],
    ],
)
def test_the_simulator_takes_any_json_value_as_a_schema(schema: Any) -> None:
    """Boolean subschemas are valid JSON Schema (``items: true``); any other value is what a
    request may hold all the same: the simulator answers, it does not raise."""
    json.dumps(instance(schema))
