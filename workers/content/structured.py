"""Structured output: the answer of a job with a JSON ``response_format``, parsed and checked.

``json_object``: the answer must parse as a JSON object. ``json_schema``: it must also be valid
against the job's schema (``jsonschema``, draft 2020-12 — a maintained validator, not our own).
The executor asks the same deployment once more when the first answer fails the check, then
fails the job ``invalid_output`` with the first validation error and where it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator

from schemas.results import ChatOutput

#: a schema's validator, kept per schema text (a batch's jobs share one schema)
_CACHED_SCHEMAS = 256


@dataclass(frozen=True, slots=True)
class Checked:
    parsed: Any = None
    error: str | None = None  # None: valid


def expected(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """What to check an answer against: ``{"type": "object"}`` for ``json_object``, the job's
    schema for ``json_schema``, None for text."""
    kind = (response_format or {}).get("type")
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        schema = ((response_format or {}).get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else {"type": "object"}
    return None


def check(text: str, schema: dict[str, Any]) -> Checked:
    try:
        value = json.loads(text)
    except ValueError as error:
        return Checked(error=f"the answer is not JSON: {error}")
    try:
        validator = _validator(json.dumps(schema, sort_keys=True))
        found = next(iter(validator.iter_errors(value)), None)
    except (RecursionError, ValueError, TypeError, LookupError) as error:  # a hostile schema
        return Checked(parsed=value, error=f"the schema cannot be applied: {error!r}"[:500])
    if found is None:
        return Checked(parsed=value)
    where = "/".join(str(step) for step in found.absolute_path) or "(the answer)"
    return Checked(parsed=value, error=f"{where}: {found.message}")


@lru_cache(maxsize=_CACHED_SCHEMAS)
def _validator(schema_text: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_text))


def checked_output(output: ChatOutput, schema: dict[str, Any]) -> ChatOutput | str:
    """The output with its answers parsed, or why one of them is not valid. An answer that
    called tools instead of writing JSON, or refused (OpenAI's ``refusal``), is not checked."""
    if output.tool_calls or output.refusal is not None:  # no JSON was meant to be there
        return output
    first = check(output.text, schema)
    if first.error is not None:
        return first.error
    choices = None
    if output.choices is not None:
        choices = []
        for choice in output.choices:
            if choice.tool_calls:
                choices.append(choice)
                continue
            found = check(choice.text, schema)
            if found.error is not None:
                return f"choices.{choice.index}: {found.error}"
            choices.append(choice.model_copy(update={"parsed": found.parsed}))
    return output.model_copy(update={"parsed": first.parsed, "choices": choices})
