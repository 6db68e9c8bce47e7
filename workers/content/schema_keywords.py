"""jsonschema's keywords whose cost a schema could make unbounded, in linear time and on a clock.

An answer is checked against a producer's schema, so no keyword may run super-linearly:
- ``pattern``, ``patternProperties`` (and the keys they decide for ``additionalProperties`` and
  ``unevaluatedProperties``) match with RE2, a linear-time engine, never Python's backtracking
  ``re`` (``^(x+)+y$`` against 28 characters took minutes, holding the GIL);
- ``uniqueItems`` compares canonical forms in a set (jsonschema compares objects pairwise:
  16 s for 3,000);
- every keyword first checks the check's deadline (:func:`spend`), so a schema whose references
  fan out (each level twice the last: 2ⁿ evaluations from n definitions) stops at its budget;
- a subschema's ``$schema`` never picks another validator: jsonschema's ``evolve`` takes the
  class its ``$schema`` names (any dialect, 2020-12 itself too: backtracking ``re``, off the
  clock), so :data:`Linear` evolves into :data:`Linear` (answers are checked as draft 2020-12).

The three property keywords follow jsonschema's own (``_keywords.py``, ``_utils.py``; MIT),
with RE2 where those call ``re.search``.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.validators import extend

from schemas.json_schema import regex

Keyword = Callable[[Any, Any, Any, dict[str, Any]], Iterable[ValidationError] | None]

#: when the running check must stop (time.monotonic); none outside a check
DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("deadline", default=math.inf)


class OverBudget(Exception):
    """The check ran past its deadline."""


def spend() -> None:
    if time.monotonic() > DEADLINE.get():
        raise OverBudget


def _on_the_clock(keyword: Keyword) -> Keyword:
    def timed(validator: Any, value: Any, instance: Any, schema: dict[str, Any]) -> Any:
        spend()
        return keyword(validator, value, instance, schema)

    return timed


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Any:
    if validator.is_type(instance, "string") and not regex(pattern).search(instance):
        yield ValidationError(f"{_short(instance)} does not match {_short(pattern)}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        compiled = regex(pattern)
        for key, value in instance.items():
            if compiled.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _matched(key: str, schema: dict[str, Any]) -> bool:
    return any(regex(pattern).search(key) for pattern in schema.get("patternProperties", {}))


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    extras = sorted(k for k in instance if k not in properties and not _matched(k, schema))
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        named = ", ".join(_short(extra) for extra in extras[:10])
        if "patternProperties" in schema:
            yield ValidationError(f"{named} match none of the patternProperties")
        else:
            yield ValidationError(f"Additional properties are not allowed ({named} unexpected)")


def _unevaluated_properties(
    validator: Any, unevaluated: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    evaluated = set(_evaluated_keys(validator, instance, schema))
    failed = [
        key
        for key in instance
        if key not in evaluated
        and next(iter(validator.descend(instance[key], unevaluated, path=key)), None) is not None
    ]
    if failed:
        named = ", ".join(_short(key) for key in failed[:10])
        yield ValidationError(f"Unevaluated properties are not allowed ({named} unexpected)")


def _evaluated_keys(validator: Any, instance: dict[str, Any], schema: Any) -> list[str]:
    """The keys of ``instance`` that ``schema`` evaluates (jsonschema's
    ``find_evaluated_property_keys_by_schema``, matching with RE2, on the clock)."""
    spend()
    if validator.is_type(schema, "boolean"):
        return []
    keys: list[str] = []
    for keyword in ("$ref", "$dynamicRef"):
        reference = schema.get(keyword)
        if reference is not None:
            resolved = validator._resolver.lookup(reference)
            inner = validator.evolve(schema=resolved.contents, _resolver=resolved.resolver)
            keys += _evaluated_keys(inner, instance, resolved.contents)
    properties = schema.get("properties")
    if validator.is_type(properties, "object"):
        keys += properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        subschema = schema.get(keyword)
        if subschema is not None:
            keys += (k for k, v in instance.items() if _valid(validator.descend(v, subschema)))
    if "patternProperties" in schema:
        keys += (key for key in instance if _matched(key, schema))
    for name, subschema in schema.get("dependentSchemas", {}).items():
        if name in instance:
            keys += _evaluated_keys(validator, instance, subschema)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if _valid(validator.descend(instance, subschema)):
                keys += _evaluated_keys(validator, instance, subschema)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys += _evaluated_keys(validator, instance, schema["if"])
            if "then" in schema:
                keys += _evaluated_keys(validator, instance, schema["then"])
        elif "else" in schema:
            keys += _evaluated_keys(validator, instance, schema["else"])
    return keys


def _unique_items(
    validator: Any, unique: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if unique and validator.is_type(instance, "array"):
        seen: set[Any] = set()
        for index, item in enumerate(instance):
            key = _canonical(item)
            if key in seen:
                yield ValidationError(f"item {index} repeats an earlier item (uniqueItems)")
                return
            seen.add(key)


def _canonical(value: Any) -> Any:
    """A hashable form equal for values JSON Schema calls equal (1 and 1.0; not 1 and true)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, float) and value.is_integer():
        return ("number", int(value))
    if isinstance(value, int | float):
        return ("number", value)
    if isinstance(value, list):
        return ("array", tuple(_canonical(item) for item in value))
    if isinstance(value, dict):
        return ("object", frozenset((k, _canonical(v)) for k, v in value.items()))
    return ("other", repr(value))


def _valid(errors: Iterator[ValidationError]) -> bool:
    return next(errors, None) is None


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


_OWN: dict[str, Keyword] = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "unevaluatedProperties": _unevaluated_properties,
    "uniqueItems": _unique_items,
}
#: draft 2020-12, every keyword on the clock, the ones above linear
Linear: Any = extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    {
        name: _on_the_clock(_OWN.get(name, keyword))
        for name, keyword in {**Draft202012Validator.VALIDATORS, **_OWN}.items()
    },
)


def _evolve_linear(self: Any, **changes: Any) -> Any:
    """jsonschema's ``evolve`` without its ``validator_for``: the same class whatever the new
    schema's ``$schema`` says."""
    cls = type(self)
    changes.setdefault("schema", self.schema)
    for field in attrs.fields(cls):
        if field.init and field.alias not in changes:
            changes[field.alias] = getattr(self, field.name)
    return cls(**changes)


Linear.evolve = _evolve_linear
