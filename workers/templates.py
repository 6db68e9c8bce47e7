"""Prompt templates rendered by the worker. Built in: ``summarize``.

A template is a list of (role, text) parts with ``{{ name }}`` placeholders; every placeholder
must have a variable, and every variable must be used by some placeholder's name set or it is
reported as unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.jobs import TemplateRef

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class TemplateError(ValueError):
    """The template is unknown or its variables do not fit; the message names the problem."""


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    version: int
    parts: tuple[tuple[str, str], ...]
    defaults: tuple[tuple[str, str], ...] = ()

    def render(self, variables: dict[str, str]) -> list[dict[str, str]]:
        values = {**dict(self.defaults), **variables}
        needed = {m.group(1) for _, text in self.parts for m in _PLACEHOLDER.finditer(text)}
        missing = sorted(needed - values.keys())
        if missing:
            raise TemplateError(f"template.variables: missing variable '{missing[0]}'")
        unknown = sorted(variables.keys() - needed)
        if unknown:
            raise TemplateError(f"template.variables: unknown variable '{unknown[0]}'")
        return [
            {"role": role, "content": _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)}
            for role, text in self.parts
        ]


BUILTIN: dict[str, list[Template]] = {
    "summarize": [
        Template(
            name="summarize",
            version=1,
            parts=(
                (
                    "system",
                    "You are a precise assistant. Summarize faithfully; do not invent facts.",
                ),
                (
                    "user",
                    "Summarize the following text in at most {{ max_words }} words.\n\n{{ text }}",
                ),
            ),
            defaults=(("max_words", "60"),),
        )
    ]
}


def render(ref: TemplateRef) -> list[dict[str, str]]:
    versions = BUILTIN.get(ref.name)
    if not versions:
        raise TemplateError(f"template.name: no template named '{ref.name}'")
    if ref.version is None:
        template = versions[-1]
    else:
        found = [t for t in versions if t.version == ref.version]
        if not found:
            raise TemplateError(f"template.version: '{ref.name}' has no version {ref.version}")
        template = found[0]
    return template.render(ref.variables)
