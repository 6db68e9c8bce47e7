"""A JSON Schema a job carries (``response_format``'s ``json_schema.schema``): what intake admits.

A worker checks each answer against the schema (``workers/content/schema_check.py``), so the
schema is the producer's code running in the worker. Intake refuses, naming where in the schema:

- a reference out of the schema: a ``$ref`` or ``$dynamicRef`` that is not a fragment of the
  schema itself (``#…``), and a ``$schema`` that is not a dialect jsonschema knows. References
  are never retrieved (the worker's registry refuses every URI it does not hold), so a schema
  that needs another document cannot be applied: refused here, where the producer hears of it.

Every object in the schema is looked at, not only those at a keyword's place: a ``$ref`` may
point anywhere in the document (``#/const/x``), making any object a schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from referencing.jsonschema import UnknownDialect, specification_with

REFERENCES = ("$ref", "$dynamicRef")


def admit(schema: dict[str, Any], where: str) -> None:
    """Raise ValueError naming the place (``where`` and the path in the schema) of the first
    part of ``schema`` a worker would not apply."""
    for path, node in _objects(schema, where):
        for keyword in REFERENCES:
            target = node.get(keyword)
            if isinstance(target, str) and not target.startswith("#"):
                raise ValueError(
                    f"{path}.{keyword}: {target[:100]!r} refers outside the schema; only "
                    "references within it ('#…') are followed, nothing is fetched"
                )
        dialect = node.get("$schema")
        if isinstance(dialect, str) and not _known_dialect(dialect):
            raise ValueError(
                f"{path}.$schema: {dialect[:100]!r} is not a JSON Schema dialect headway knows "
                "(answers are checked as draft 2020-12)"
            )


def _known_dialect(uri: str) -> bool:
    try:
        specification_with(uri)
    except UnknownDialect:
        return False
    return True


def _objects(value: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every JSON object in ``value`` with its dotted path, parents first (iteratively: a
    deep document does not exhaust the stack)."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, dict):
            yield where, node
            children = node.items()
        elif isinstance(node, list):
            children = enumerate(node)  # type: ignore[assignment]
        else:
            continue
        stack.extend((f"{where}.{key}", child) for key, child in reversed(list(children)))
