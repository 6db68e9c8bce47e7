"""Token estimates for decisions made before a call: routing by cost, rate limits, budgets.

:func:`job_input` is *the* estimate of a job's billed input — made once per job, at
preparation, and held by everything that reserves: its tenant's tpm, its budgets, its
``max_cost_usd``, each deployment's tpm. It counts every part of a request a provider bills
as input, not only the messages' text:

- each message: its text (content string or text parts), its ``name``, the ``tool_call_id`` a
  tool message answers, an assistant's tool calls (id, name, arguments), plus a few tokens of
  framing; images and documents by ``workers/content/media.py`` (an image by its size with the
  providers' published formulas, or the most any provider charges when its size is unknown;
  a PDF by its pages) and a document's ``filename``;
- the tool definitions, a named ``tool_choice`` and the ``response_format`` (its schema), by
  their JSON's characters, plus the system prompt providers add for tool use
  (:data:`TOOL_USE_SYSTEM_TOKENS`; a structured answer is a forced tool on Anthropic);
- an embedding job's inputs.

A ``prediction`` is billed — its rejected tokens, at completion rates — as *output*: it counts
in :func:`output_allowance`, at the output price, on top of ``max_tokens``.

Text counts characters / 4 (the usual rule of thumb for English with BPE tokenizers). After
each call the provider's reported usage is known; :class:`Calibration` keeps, per deployment,
a moving ratio of reported to estimated input tokens and scales later estimates by it, so a
model whose tokenizer counts differently (CJK text, code) is estimated right after a few
calls. When a provider reports no usage at all (some OpenAI-compatible servers), the
calibrated estimate stands in and the result says so (``usage.estimated``).
"""

from __future__ import annotations

import json
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
#: the system prompt a provider adds to a request with tools: Anthropic's is 346 tokens at most
#: (its pricing page; 313 with tool_choice any/tool) — a structured answer is a forced tool there
TOOL_USE_SYSTEM_TOKENS = 346
STRUCTURED = ("json_object", "json_schema")
CALIBRATION_WEIGHT = 0.1  # weight of the newest observation in the moving ratio
CALIBRATION_BOUNDS = (0.25, 4.0)


def text_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def output_allowance(job: JobRequest) -> int:
    """Output tokens a job may be billed: chat ``max_tokens`` or ``max_completion_tokens`` (or
    the default), times its ``n`` answers, plus its ``prediction`` (rejected predicted tokens
    are billed as completion tokens); embeddings none."""
    if job.kind is not JobKind.CHAT:
        return 0
    params = job.params
    if params is None:
        return DEFAULT_OUTPUT_TOKENS
    answers = (params.output_limit or DEFAULT_OUTPUT_TOKENS) * (params.n or 1)
    if params.prediction is None:
        return answers
    return answers + text_tokens(_json(params.prediction))  # rejected: billed as output


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
    """Every billed token of chat messages in OpenAI's shape (``WireMessages``)."""
    total = 0
    for message in messages:
        content = message.get("content")
        if type(content) is str and len(message) == 2:  # role and text: the common case
            total += text_tokens(content) + MESSAGE_OVERHEAD_TOKENS
        else:
            total += _rich_tokens(message, content) + MESSAGE_OVERHEAD_TOKENS
    return total


def _rich_tokens(message: Mapping[str, Any], content: str | list[dict[str, Any]] | None) -> int:
    """A message with parts, a name, tool calls or a tool call id: text by characters, images
    and files by ``workers/content/media.py``'s estimates."""
    total = text_tokens(content) if isinstance(content, str) else 0
    for part in content if isinstance(content, list) else ():
        kind = part["type"]
        if kind == "text":
            total += text_tokens(part["text"])
        elif kind == "image_url":
            image = part["image_url"]
            total += media.url_image_tokens(image["url"], image.get("detail"))
        else:
            document = part["file"]
            total += media.file_tokens(document["file_data"])
            total += _optional_tokens(document.get("filename"))
    total += _optional_tokens(message.get("name")) + _optional_tokens(message.get("tool_call_id"))
    for call in message.get("tool_calls") or ():
        function = call["function"]
        total += text_tokens(call["id"]) + text_tokens(function["name"])
        total += text_tokens(function["arguments"])
    return total


def _optional_tokens(text: str | None) -> int:
    return 0 if text is None else text_tokens(text)


def definition_tokens(params: Params | None) -> int:
    """What a chat's parameters add to its billed input: tool definitions, a named tool
    choice and the response format by their JSON's characters, and the tool-use prompt."""
    if params is None:
        return 0
    total = 0
    if params.tools is not None:
        total += sum(
            text_tokens(_json(tool.model_dump(exclude_none=True))) for tool in params.tools
        )
    choice = params.tool_choice
    if choice is not None and not isinstance(choice, str):
        total += text_tokens(_json(choice.model_dump()))
    response_format = params.response_format
    if response_format is not None:
        total += text_tokens(_json(response_format))
    if params.tools is not None or (response_format or {}).get("type") in STRUCTURED:
        total += TOOL_USE_SYSTEM_TOKENS
    return total


def _json(value: Any) -> str:
    return json.dumps(value)  # ASCII escapes: a non-Latin text counts more, never less


def chat_input(messages: Iterable[Mapping[str, Any]], params: Params | None) -> int:
    """Estimated billed input of one chat call: its messages and its parameters' part."""
    return max(1, message_tokens(messages) + definition_tokens(params))


def inputs_tokens(inputs: Iterable[str]) -> int:
    """Estimated input tokens of embedding inputs."""
    return max(1, sum(text_tokens(text) for text in inputs))


def job_input(job: JobRequest, messages: Iterable[Mapping[str, Any]] | None) -> int:
    """The job's billed input, estimated (``messages``: as they will be sent, after templates
    and guardrails; None for an embedding job)."""
    if job.kind is JobKind.CHAT:
        return chat_input(messages or (), job.params)
    return inputs_tokens(job.inputs)


class BilledInput:
    """A job's billed input (:func:`job_input`), estimated when first asked for and then kept:
    the one estimate its tenant's tpm, its budgets, its ``max_cost_usd`` and each deployment's
    tpm hold. A job no reservation needs never pays for it (a PDF's pages are counted by
    decoding it)."""

    __slots__ = ("_job", "_messages", "_tokens")

    def __init__(self, job: JobRequest, messages: Iterable[Mapping[str, Any]] | None) -> None:
        self._job = job
        self._messages = messages
        self._tokens: int | None = None

    @property
    def tokens(self) -> int:
        if self._tokens is None:
            self._tokens = job_input(self._job, self._messages)
        return self._tokens


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
