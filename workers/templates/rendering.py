"""Prompt templates: versioned lists of chat messages rendered with Jinja2's sandbox.

A template is a name, an integer version, a list of ``(role, text)`` messages whose texts are
Jinja2 templates, and default values for some variables. Rendering is strict: a variable the
template uses without a value (and without a default) is an error that names it, and so is a
variable the job sends that no template it could be given uses (a typo would otherwise vanish
silently). The sandbox keeps a template from reaching Python internals (``{{ x.__class__ }}``).

Versions are immutable once pushed (``headway templates push``); the built-in ``summarize``
is version 1 of its name, so a pushed ``summarize`` becomes version 2.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import StrictUndefined, meta
from jinja2 import TemplateError as JinjaError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from broker.errors import TemplateError

ROLES = ("system", "user", "assistant")
NAME_MAX = 128
MAX_REPEAT = 100_000  # the most `'x' * n` may repeat in a template
MAX_EXPONENT = 1_000  # the largest `a ** n`
#: what a template's own arithmetic may raise on a job's values: the job's error, not headway's
RENDER_ERRORS = (JinjaError, ArithmeticError, LookupError, TypeError, ValueError, RecursionError)


class _Sandbox(SandboxedEnvironment):
    """Jinja's sandbox, plus bounds on the two operators that can allocate without limit."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent {right} exceeds {MAX_EXPONENT}")
        if operator == "*":
            for count, other in ((left, right), (right, left)):
                repeats = isinstance(count, int) and isinstance(other, str | list | tuple)
                if repeats and count * max(len(other), 1) > MAX_REPEAT:
                    raise SecurityError(f"repeating a value {count} times exceeds the limit")
        return super().call_binop(context, operator, left, right)


_ENV = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """What a template file holds: everything but the version (the store assigns it)."""

    name: str
    messages: tuple[tuple[str, str], ...]
    defaults: tuple[tuple[str, str], ...] = ()
    description: str = ""

    def body(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "messages": [{"role": role, "content": text} for role, text in self.messages],
            "defaults": dict(self.defaults),
        }

    def digest(self) -> str:
        """Identifies the content: pushing the same content again adds no version."""
        canonical = json.dumps(self.body(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @classmethod
    def from_body(cls, name: str, body: dict[str, Any]) -> TemplateSpec:
        return parse_spec({"name": name, **body}, f"template {name!r}")


@dataclass(frozen=True)
class Template:
    spec: TemplateSpec
    version: int

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def _compiled(self) -> list[tuple[str, jinja2.Template]]:
        return [(role, _ENV.from_string(text)) for role, text in self.spec.messages]

    @cached_property
    def variables(self) -> frozenset[str]:
        """Every variable some message of the template uses."""
        used: set[str] = set()
        for _, text in self.spec.messages:
            used |= meta.find_undeclared_variables(_ENV.parse(text))
        return frozenset(used)

    def render(
        self, variables: dict[str, str], also_known: frozenset[str] = frozenset()
    ) -> list[dict[str, str]]:
        """The chat messages; ``also_known``: variables other versions the job could have
        been given use (not unknown, only unused here)."""
        unknown = sorted(variables.keys() - self.variables - also_known)
        if unknown:
            raise TemplateError(
                f"template.variables: unknown variable '{unknown[0]}' "
                f"(template '{self.name}' version {self.version} uses "
                f"{', '.join(sorted(self.variables)) or 'none'})"
            )
        missing = sorted(self.variables - variables.keys() - dict(self.spec.defaults).keys())
        if missing:
            raise TemplateError(f"template.variables: missing variable '{missing[0]}'")
        values = {**dict(self.spec.defaults), **variables}
        try:
            return [
                {"role": role, "content": compiled.render(values)}
                for role, compiled in self._compiled
            ]
        except RENDER_ERRORS as error:  # a sandbox violation, a filter on a bad value, 1/0 …
            raise TemplateError(
                f"template '{self.name}' version {self.version} failed to render: {error}"
            ) from None


def parse_spec(data: dict[str, Any], source: str) -> TemplateSpec:
    """Check a template's fields; errors name the field."""
    unknown = sorted(data.keys() - {"name", "description", "messages", "defaults"})
    if unknown:
        raise TemplateError(f"{source}: {unknown[0]}: unknown key")
    name = data.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= NAME_MAX:
        raise TemplateError(f"{source}: name: a string of 1 to {NAME_MAX} characters is required")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise TemplateError(f"{source}: description: must be a string")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TemplateError(
            f"{source}: messages: a non-empty list of {{role, content}} is required"
        )
    parts = tuple(
        _message(item, f"{source}: messages.{index}") for index, item in enumerate(messages)
    )
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in defaults.items()
    ):
        raise TemplateError(f"{source}: defaults: a table of string values is required")
    return TemplateSpec(name, parts, tuple(sorted(defaults.items())), description)


def _message(item: Any, where: str) -> tuple[str, str]:
    if not isinstance(item, dict) or item.keys() != {"role", "content"}:
        raise TemplateError(f"{where}: exactly the keys role and content are required")
    role, content = item["role"], item["content"]
    if role not in ROLES:
        raise TemplateError(f"{where}.role: must be one of {', '.join(ROLES)}, not {role!r}")
    if not isinstance(content, str):
        raise TemplateError(f"{where}.content: must be a string")
    try:
        _ENV.parse(content)
    except JinjaError as error:
        raise TemplateError(f"{where}.content: not a valid Jinja2 template: {error}") from None
    return role, content


def load_file(path: Path) -> TemplateSpec:
    """A template file: TOML (``.toml``) or JSON (``.json``) with name, messages, defaults."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise TemplateError(f"{path}: cannot read: {error}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise TemplateError(f"{path}: not valid {kind}: {error}") from None
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: a template is an object with name and messages")
    return parse_spec(data, str(path))


BUILTIN: dict[str, list[Template]] = {
    "summarize": [
        Template(
            TemplateSpec(
                name="summarize",
                description="Summarize a text faithfully in at most max_words words.",
                messages=(
                    (
                        "system",
                        "You are a precise assistant. Summarize faithfully; do not invent facts.",
                    ),
                    (
                        "user",
                        "Summarize the following text in at most {{ max_words }} words."
                        "\n\n{{ text }}",
                    ),
                ),
                defaults=(("max_words", "60"),),
            ),
            version=1,
        )
    ]
}
