"""What the simulator answers: deterministic text, embeddings and token counts."""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from typing import Any

LATENCY_DIRECTIVE = re.compile(r"sim:latency_ms=(\d{1,7})")
REJECT_DIRECTIVE = "sim:reject"  # an embedding input the simulator refuses (HTTP 400)
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
DEFAULT_EMBEDDING_DIMENSIONS = 16
DEFAULT_MAX_TOKENS = 64


def count_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def is_poison(text: str) -> bool:
    return REJECT_DIRECTIVE in text


def requested_latency_ms(body: dict[str, Any]) -> float | None:
    """A test may ask for a slow answer: ``sim:latency_ms=N`` anywhere in the request text."""
    match = LATENCY_DIRECTIVE.search(json.dumps(body.get("messages") or body.get("input") or ""))
    return float(match.group(1)) if match else None


def completion(messages: list[dict[str, Any]], max_tokens: int | None) -> tuple[str, int, str]:
    """A deterministic reply: the first words of the last user message, as a 'summary'.

    Returns (text, completion_tokens, finish_reason)."""
    limit = max_tokens or DEFAULT_MAX_TOKENS
    user = next(
        (str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    digest = hashlib.sha256(user.encode()).hexdigest()[:8]
    words = [f"Summary[{digest}]:", *user.split()[:48]]
    text, tokens = "", 0
    for word in words:
        cost = count_tokens(word + " ")
        if tokens + cost > limit:
            return text.rstrip(), tokens, "length"
        text += word + " "
        tokens += cost
    return text.rstrip(), max(tokens, 1), "stop"


def embedding(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector derived from the text."""
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        block = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        for (word,) in struct.iter_unpack(">I", block):
            values.append(word / 0xFFFFFFFF * 2 - 1)
        counter += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]
