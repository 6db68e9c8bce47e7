"""Blocked terms (whole words, any case, in :func:`~workers.guardrails.normal.folded` text:
look-alikes, fullwidth forms, zero-width characters and whitespace runs do not hide them) and
regular expressions (on the text, then on its folded form), on input and output."""

from __future__ import annotations

import re
from collections.abc import Sequence

from workers.guardrails.base import Context, Verdict
from workers.guardrails.normal import folded


class BlockedContent:
    name = "blocked_content"

    def __init__(self, terms: Sequence[str], patterns: Sequence[str], scan_output: bool) -> None:
        self._terms = [
            (term, re.compile(rf"(?<!\w){re.escape(folded(term))}(?!\w)")) for term in terms
        ]
        self._patterns = [(pattern, re.compile(pattern)) for pattern in patterns]
        self._scan_output = scan_output

    def _first(self, text: str) -> str | None:
        normal = folded(text)
        for term, compiled in self._terms:
            if compiled.search(normal):
                return f"blocked term '{term}'"
        for pattern, compiled in self._patterns:
            if compiled.search(text) or compiled.search(normal):
                return f"blocked pattern /{pattern}/"
        return None

    async def inbound(self, texts: list[str], context: Context) -> Verdict:
        for text in texts:
            found = self._first(text)
            if found is not None:
                return Verdict(blocked=f"{found} in the input")
        return Verdict()

    async def outbound(self, text: str, context: Context) -> Verdict:
        if self._scan_output and (found := self._first(text)) is not None:
            return Verdict(blocked=f"{found} in the output")
        return Verdict()
