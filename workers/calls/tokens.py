"""Token estimates for decisions made before a call: routing by cost, rate limits, budgets.

The estimate is deliberately cheap (characters / 4, plus a few tokens of framing per chat
message — the usual rule of thumb for English with BPE tokenizers). After each call the
provider's reported usage is known; :class:`Calibration` keeps, per deployment, a moving
ratio of reported to estimated input tokens and scales later estimates by it, so a model
whose tokenizer counts differently (CJK text, code) is estimated right after a few calls.
When a provider reports no usage at all (some OpenAI-compatible servers), the calibrated
estimate stands in and the result says so (``usage.estimated``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from schemas.jobs import JobKind, JobRequest, Params
from workers.content import media

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
#: a chat job that sets no max_tokens reserves this many output tokens (quotas, budgets, cost
#: limits) and is sent with it as its max_tokens: what was reserved bounds what can be spent
DEFAULT_OUTPUT_TOKENS = 1024
_DEFAULT_PARAMS = Params(max_tokens=DEFAULT_OUTPUT_TOKENS)
CALIBRATION_WEIGHT = 0.1  # weight of the newest observation in the moving ratio
CALIBRATION_BOUNDS = (0.25, 4.0)


def text_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def output_allowance(job: JobRequest) -> int:
    """Output tokens a job may produce: chat ``max_tokens`` or ``max_completion_tokens`` (or
    the default), times its ``n`` answers; embeddings none."""
    if job.kind is not JobKind.CHAT:
        return 0
    params = job.params
    if params is None:
        return DEFAULT_OUTPUT_TOKENS
    return (params.output_limit or DEFAULT_OUTPUT_TOKENS) * (params.n or 1)


def call_params(job: JobRequest) -> Params:
    """A chat job's parameters as sent: its own, with the output allowance as ``max_tokens``
    when it set no limit (a call without a limit could spend past what its budget hold
    reserved)."""
    params = job.params
    if params is None:
        return _DEFAULT_PARAMS
    if params.output_limit is None:
        return params.model_copy(update={"max_tokens": DEFAULT_OUTPUT_TOKENS})
    return params


def message_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += text_tokens(content) + MESSAGE_OVERHEAD_TOKENS
        else:
            total += _rich_tokens(message, content) + MESSAGE_OVERHEAD_TOKENS
    return total


def _rich_tokens(message: Mapping[str, Any], content: list[dict[str, Any]] | None) -> int:
    """A message with parts or tool calls: text by characters, images and files by
    ``workers/content/media.py``'s estimates."""
    total = 0
    for part in content or ():
        kind = part["type"]
        if kind == "text":
            total += text_tokens(part["text"])
        elif kind == "image_url":
            image = part["image_url"]
            total += media.url_image_tokens(image["url"], image.get("detail"))
        else:
            total += media.file_tokens(part["file"]["file_data"])
    for call in message.get("tool_calls") or ():
        function = call["function"]
        total += text_tokens(function["name"]) + text_tokens(function["arguments"])
    return total


def input_tokens(messages: Iterable[Mapping[str, Any]] | None, inputs: Iterable[str]) -> int:
    """Estimated input tokens of a chat (``messages``) or embedding (``inputs``) request."""
    total = message_tokens(messages or ()) + sum(text_tokens(text) for text in inputs)
    return max(1, total)


class Calibration:
    """Per-deployment ratio of reported to estimated input tokens (1.0 until observed)."""

    def __init__(self) -> None:
        self._ratios: dict[str, float] = {}

    def ratio(self, deployment: str) -> float:
        return self._ratios.get(deployment, 1.0)

    def estimate(self, deployment: str, raw_estimate: int) -> int:
        return max(1, round(raw_estimate * self.ratio(deployment)))

    def observe(self, deployment: str, raw_estimate: int, reported: int) -> None:
        if raw_estimate <= 0 or reported <= 0:
            return
        low, high = CALIBRATION_BOUNDS
        sample = min(high, max(low, reported / raw_estimate))
        old = self._ratios.get(deployment)
        self._ratios[deployment] = (
            sample if old is None else old + CALIBRATION_WEIGHT * (sample - old)
        )
