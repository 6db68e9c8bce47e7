"""A prompt-injection heuristic: phrases that try to override the instructions a pipeline gave.

It looks for the common shapes — "ignore (all) previous instructions", "disregard the system
prompt", "you are now …", "reveal your system prompt", role-marker tokens pasted into content
(``<|im_start|>``, ``[INST]``, ``### System:``) — in user-supplied text. It is a cheap first
line, not a classifier: configure ``injection = "flag"`` to see what it catches before
``"block"``.
"""

from __future__ import annotations

import re

from workers.guardrails.base import Context, Verdict
from workers.guardrails.normal import folded

_SIGNS = [
    (
        "override",
        r"\b(?:ignore|disregard|forget|override)\b[^.\n]{0,40}\b(?:previous|prior|above|earlier"
        r"|all|any|the|your)\b[^.\n]{0,30}\b(?:instructions?|rules|prompts?|directions)\b",
    ),
    (
        "reveal",
        r"\b(?:reveal|print|show|repeat|leak)\b[^.\n]{0,30}\b(?:system|hidden|initial)\s+prompt\b",
    ),
    (
        "persona",
        r"\byou\s+are\s+now\b|\bact\s+as\s+(?:dan|an?\s+unrestricted)\b|\bdeveloper\s+mode\b",
    ),
    (
        "role_marker",
        r"<\|im_start\|>|<\|system\|>|\[/?INST\]|^\s*#{2,}\s*(?:system|instruction)s?\s*:",
    ),
]
_COMPILED = [(name, re.compile(pattern, re.IGNORECASE | re.MULTILINE)) for name, pattern in _SIGNS]


def signs(text: str) -> list[str]:
    """The signs found in ``text`` as written or in its folded form (look-alikes, fullwidth
    letters and zero-width characters do not hide a phrase; line structure is kept)."""
    lines = "\n".join(folded(line) for line in text.splitlines())
    return [name for name, pattern in _COMPILED if pattern.search(text) or pattern.search(lines)]


class InjectionHeuristic:
    name = "prompt_injection"

    def __init__(self, block: bool) -> None:
        self._block = block

    async def inbound(self, texts: list[str], context: Context) -> Verdict:
        found = sorted({sign for text in texts for sign in signs(text)})
        if not found:
            return Verdict()
        what = f"prompt injection suspected ({', '.join(found)})"
        return Verdict(blocked=what) if self._block else Verdict(flags=(what,))

    async def outbound(self, text: str, context: Context) -> Verdict:
        return Verdict()
