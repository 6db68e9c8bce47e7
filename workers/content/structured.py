"""Structured output: the answer of a job with a JSON ``response_format``, parsed and checked.

``json_object``: the answer must parse as a JSON object. ``json_schema``: it must also be valid
against the job's schema (``jsonschema``, draft 2020-12, never retrieving a reference, off the
event loop on a clock: ``schema_check``). The executor asks the same deployment once more when
the first answer fails the check, then fails the job ``invalid_output`` with the first
validation error and where it is; a schema that cannot be applied (:attr:`Invalid.unusable`)
fails it at once — asking again would not help.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from schemas.results import ChatOutput
from workers.content import schema_check
from workers.content.schema_check import CHECKS, Checks, Unusable

UNUSABLE = "the schema cannot be applied: "


@dataclass(frozen=True, slots=True)
class Checked:
    parsed: Any = None
    error: str | None = None  # None: valid
    unusable: bool = False  # the schema, not the answer, is at fault


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why an output is not the JSON its job asked for."""

    reason: str
    unusable: bool = False  # the schema cannot be applied: asking again cannot help


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


async def check(
    text: str, schema: dict[str, Any], checks: Checks = CHECKS, tenant: str | None = None
) -> Checked:
    """One answer, parsed and checked in a check thread, within the checks' budget (in
    ``tenant``'s turn)."""
    try:
        return await checks.run(lambda: _check(text, schema), tenant)
    except Unusable as unusable:
        return Checked(error=f"{UNUSABLE}{unusable}", unusable=True)


async def checked_output(
    output: ChatOutput, schema: dict[str, Any], checks: Checks = CHECKS, tenant: str | None = None
) -> ChatOutput | Invalid:
    """The output with its answers parsed, or why one of them is not valid. An answer that
    called tools instead of writing JSON, or refused (OpenAI's ``refusal``), is not checked."""
    if output.tool_calls or output.refusal is not None:  # no JSON was meant to be there
        return output
    try:
        return await checks.run(lambda: _checked_output(output, schema), tenant)
    except Unusable as unusable:
        return Invalid(f"{UNUSABLE}{unusable}", unusable=True)


def _checked_output(output: ChatOutput, schema: dict[str, Any]) -> ChatOutput | Invalid:
    first = _check(output.text, schema)
    if first.error is not None:
        return Invalid(first.error, first.unusable)
    choices = None
    if output.choices is not None:
        choices = []
        for choice in output.choices:
            if choice.tool_calls:
                choices.append(choice)
                continue
            found = _check(choice.text, schema)
            if found.error is not None:
                return Invalid(f"choices.{choice.index}: {found.error}", found.unusable)
            choices.append(choice.model_copy(update={"parsed": found.parsed}))
    return output.model_copy(update={"parsed": first.parsed, "choices": choices})


def _check(text: str, schema: dict[str, Any]) -> Checked:
    try:
        value = json.loads(text)
    except ValueError as error:
        return Checked(error=f"the answer is not JSON: {error}")
    except RecursionError:
        return Checked(error="the answer is not JSON headway reads: nested too deeply")
    try:
        found = schema_check.first_error(schema, value)
    except Unusable as unusable:  # a hostile or broken schema: said in words
        return Checked(parsed=value, error=f"{UNUSABLE}{unusable}", unusable=True)
    if found is None:
        return Checked(parsed=value)
    where = "/".join(str(step) for step in found.absolute_path) or "(the answer)"
    return Checked(parsed=value, error=f"{where}: {found.message}")
