"""A JSON Schema a job carries (``response_format``'s ``json_schema.schema``): what is admitted.

A worker checks each answer against the schema (``workers/content/schema_check.py``), so the
schema is the producer's code running in the worker. Refused, naming where in the schema:

- a reference out of the schema: a ``$ref`` or ``$dynamicRef`` that is not a fragment of the
  schema itself (``#…``), and a ``$schema`` that is not a dialect jsonschema knows. References
  are never retrieved (the worker's registry refuses every URI it does not hold), so a schema
  that needs another document cannot be applied: refused where the producer hears of it;
- a schema larger than :data:`MAX_NODES` JSON values or deeper than :data:`MAX_DEPTH` (above
  OpenAI's own structured-output bounds: 5,000 properties, 10 levels of nesting);
- a ``pattern`` or ``patternProperties`` key RE2 cannot compile (lookaround, backreferences, a
  program past :data:`PATTERN_MEMORY`), and patterns whose programs add up past
  :data:`MAX_PROGRAM`: answers are matched in linear time, with RE2 (:func:`regex`), never by
  backtracking — but RE2 is linear in time, not small in memory: ``(?:\\pL|\\pN){300}``, 20
  bytes, compiled (with RE2's 8 MiB default) to ~3.7 MB held in the cache, holding the GIL 0.13 s.

:func:`admit` is the structure, in one pass over the document (microseconds a node: a worker's
intake runs it on its event loop). :func:`check` adds the meta-schema and the patterns, which
cost far more (jsonschema's meta-schema check: ~150 µs a node): producers' clients run it when
they validate a job, and a worker runs it off its event loop, on a clock, before any call.

Every object in the schema is looked at, not only those at a keyword's place: a ``$ref`` may
point anywhere in the document (``#/const/x``), making any object a schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import re2
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError
from referencing.jsonschema import UnknownDialect, specification_with

REFERENCES = ("$ref", "$dynamicRef")
#: JSON values in one schema (objects, arrays, strings, numbers… each counts one)
MAX_NODES = 20_000
#: nesting of the schema document (``properties.a`` is two levels: the map and the schema)
MAX_DEPTH = 64
#: RE2's memory budget for one pattern (its program and its DFA's cache): also bounds the time
#: compiling it holds the GIL (~60 ms)
PATTERN_MEMORY = 2 * 1024 * 1024
#: RE2 instructions of a schema's patterns in all (each pattern counted once)
MAX_PROGRAM = 150_000
#: compiled patterns kept (each at most PATTERN_MEMORY)
_CACHED_PATTERNS = 64
_SHOWN = 100  # characters of a reference or pattern quoted in an error
_RE2 = re2.Options()
_RE2.log_errors = False  # a producer's bad pattern is our answer to them, not stderr noise
_RE2.max_mem = PATTERN_MEMORY
#: the meta-schema's formats but ``regex``: patterns are RE2's to judge (and Python's ``re``
#: never compiles a producer's pattern)
_FORMATS = FormatChecker([f for f in Draft202012Validator.FORMAT_CHECKER.checkers if f != "regex"])


@lru_cache(maxsize=_CACHED_PATTERNS)
def regex(pattern: str) -> re2._Regexp[str]:
    """``pattern`` compiled by RE2 (linear-time matching); ``re2.error`` when it cannot be."""
    return re2.compile(pattern, _RE2)


def admit(schema: dict[str, Any], where: str) -> None:
    """Raise ValueError naming the place (``where`` and the path in the schema) of the first
    part of ``schema``'s structure a worker would not apply: its size, depth and references."""
    nodes = 0
    for path, node, depth in _values(schema, where):
        nodes += 1
        if nodes > MAX_NODES:
            raise ValueError(f"{where}: more than {MAX_NODES:,} JSON values; the limit")
        if depth > MAX_DEPTH:
            raise ValueError(f"{path}: nested deeper than {MAX_DEPTH} levels; the limit")
        if not isinstance(node, dict):
            continue
        for keyword in REFERENCES:
            target = node.get(keyword)
            if isinstance(target, str) and not target.startswith("#"):
                raise ValueError(
                    f"{path}.{keyword}: {target[:_SHOWN]!r} refers outside the schema; only "
                    "references within it ('#…') are followed, nothing is fetched"
                )
        dialect = node.get("$schema")
        if isinstance(dialect, str) and not _known_dialect(dialect):
            raise ValueError(
                f"{path}.$schema: {dialect[:_SHOWN]!r} is not a JSON Schema dialect headway "
                "knows (answers are checked as draft 2020-12)"
            )


def check(schema: dict[str, Any], where: str) -> None:
    """:func:`admit`, then a valid draft 2020-12 schema whose patterns RE2 compiles; ValueError
    naming the place of the first fault."""
    admit(schema, where)
    programs: dict[str, int] = {}
    for path, node, _ in _values(schema, where):
        if not isinstance(node, dict):
            continue
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            programs[pattern] = _compiles(pattern, f"{path}.pattern")
        patterns = node.get("patternProperties")
        if isinstance(patterns, dict):
            for key in patterns:
                programs[key] = _compiles(key, f"{path}.patternProperties")
        if sum(programs.values()) > MAX_PROGRAM:
            raise ValueError(
                f"{where}: its patterns compile to more than {MAX_PROGRAM:,} RE2 instructions "
                "in all; the limit"
            )
    try:
        Draft202012Validator.check_schema(schema, format_checker=_FORMATS)
    except SchemaError as error:
        raise ValueError(f"{where}: {error.message}") from None


def _compiles(pattern: str, path: str) -> int:
    """The size of ``pattern``'s RE2 program; ValueError naming ``path`` when RE2 refuses it."""
    try:
        return int(regex(pattern).programsize)
    except re2.error as error:
        reason = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else ""
        raise ValueError(
            f"{path}: {pattern[:_SHOWN]!r} is not a pattern RE2 matches ({reason}); patterns are "
            "matched in linear time, so lookaround and backreferences are not supported"
        ) from None


def _known_dialect(uri: str) -> bool:
    try:
        specification_with(uri)
    except UnknownDialect:
        return False
    return True


def _values(value: Any, path: str) -> Iterator[tuple[str, Any, int]]:
    """Every JSON value in ``value`` with its dotted path and depth, parents first
    (iteratively: a deep document does not exhaust the stack)."""
    stack: list[tuple[str, Any, int]] = [(path, value, 0)]
    while stack:
        where, node, depth = stack.pop()
        yield where, node, depth
        if isinstance(node, dict):
            children = list(node.items())
        elif isinstance(node, list):
            children = list(enumerate(node))
        else:
            continue
        stack.extend((f"{where}.{key}", child, depth + 1) for key, child in reversed(children))
