"""Every text a provider receives in a job's request, found by walking the request as it is
sent — its messages (after templates), its parameters, its embedding inputs — so that a field
added later is screened by default: what the guardrails screen, and where what they rewrite
goes back.

Each string, and each key of a free-form object (``metadata``, ``logit_bias``, schemas,
``web_search_options``), is one of:

- :attr:`Use.READ` — text the model reads, or an identifier with no structure to keep: a
  message's text and text parts, a tool message's answer, tool calls' arguments, a message's
  ``name``, a PDF's ``filename``, the ``prediction``, ``metadata`` values, ``user``,
  ``safety_identifier``, ``prompt_cache_key``, embedding inputs. Screened; where a policy
  redacts PII, the redacted text is what the provider receives.
- :attr:`Use.AS_SENT` — everything else, and so any field added later: what cannot be
  rewritten without changing what the request means or breaking it — an https image URL
  (the provider fetches it), tool call ids (they pair calls with answers), tool definitions
  and names, the response schema, stop sequences, ``service_tier``, ``web_search_options``,
  object keys. Screened; a guardrail that would rewrite one (PII in it) blocks the job.
- not screened: the vocabulary the schema fixes (``role``, ``type``, ``detail``, enum
  parameters — a pattern must not block every job for saying ``"user"``) and inline data (a
  ``data:`` image or PDF: bytes no text guardrail reads; they are sent as they are).

The walk is iterative (no recursion on a deeply nested object) and, for the common job — plain
messages, no parameters — one step per message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from schemas.jobs import JobRequest

Path = tuple[str | int, ...]
Shape = tuple[str, ...]  # a path with its list indexes as "*"
WireMessages = list[dict[str, Any]]


class Use(StrEnum):
    READ = "read"  # screened; redacted where a policy redacts
    AS_SENT = "as_sent"  # screened; a rewrite blocks the job


@dataclass(frozen=True, slots=True)
class SentText:
    path: Path  # ("messages", 0, "content"), ("params", "metadata", "purpose"), ("inputs", 1)
    text: str
    use: Use
    key: bool = False  # an object's key (``path`` ends with it)

    def where(self) -> str:
        """The field, for a message: an object's key is not repeated (it may be the PII)."""
        steps = self.path[:-1] if self.key else self.path
        return ".".join(map(str, steps)) + (" (a key)" if self.key else "")


_MESSAGE: Shape = ("messages", "*")
_PART: Shape = (*_MESSAGE, "content", "*")
_CALL: Shape = (*_MESSAGE, "tool_calls", "*")
IMAGE_URL: Shape = (*_PART, "image_url", "url")
READ: frozenset[Shape] = frozenset(
    {
        (*_MESSAGE, "content"),
        (*_MESSAGE, "name"),
        (*_PART, "text"),
        (*_PART, "file", "filename"),
        (*_CALL, "function", "arguments"),
        ("params", "prediction", "content"),
        ("params", "prediction", "content", "*", "text"),
        ("params", "user"),
        ("params", "safety_identifier"),
        ("params", "prompt_cache_key"),
        ("inputs", "*"),
    }
)
READ_VALUES_OF: frozenset[Shape] = frozenset({("params", "metadata")})  # any key's value
VOCABULARY: frozenset[Shape] = frozenset(
    {
        (*_MESSAGE, "role"),
        (*_PART, "type"),
        (*_PART, "image_url", "detail"),
        (*_PART, "file", "file_data"),  # a data URL (a PDF's bytes): schemas/content.py
        (*_CALL, "type"),
        ("params", "tools", "*", "type"),
        ("params", "tool_choice"),  # a string: none, auto, required (a name is under it)
        ("params", "tool_choice", "type"),
        ("params", "response_format", "type"),
        ("params", "prediction", "type"),
        ("params", "prediction", "content", "*", "type"),
        ("params", "reasoning_effort"),
        ("params", "verbosity"),
        ("params", "modalities", "*"),
        ("params", "encoding_format"),
    }
)
#: objects whose keys the schema defines (pydantic models): their keys are not screened
STRUCTURAL: frozenset[Shape] = frozenset(
    {
        _MESSAGE,
        _PART,
        (*_PART, "image_url"),
        (*_PART, "file"),
        _CALL,
        (*_CALL, "function"),
        ("params",),
        ("params", "tools", "*"),
        ("params", "tools", "*", "function"),
        ("params", "tool_choice"),
        ("params", "tool_choice", "function"),
    }
)


def _shape(path: Path) -> Shape:
    return tuple("*" if isinstance(step, int) else step for step in path)


def _use(path: Path, text: str) -> Use | None:
    shape = _shape(path)
    if shape in VOCABULARY:
        return None
    if shape == IMAGE_URL:
        return None if text.startswith("data:") else Use.AS_SENT  # schemas/content.py
    if shape in READ or shape[:-1] in READ_VALUES_OF:
        return Use.READ
    return Use.AS_SENT


def sent_texts(job: JobRequest, messages: WireMessages | None) -> list[SentText]:
    """Every screened text of the job's request, in a stable order."""
    found: list[SentText] = []
    for index, message in enumerate(messages or ()):
        content = message.get("content")
        if type(content) is str and len(message) == 2:  # role and text: the common case
            found.append(SentText(("messages", index, "content"), content, Use.READ))
        else:
            _walk(message, ("messages", index), found)
    for index, text in enumerate(job.inputs):
        found.append(SentText(("inputs", index), text, Use.READ))
    if job.params is not None:
        _walk(job.params.model_dump(mode="json", exclude_none=True), ("params",), found)
    return found


def _walk(root: Any, at: Path, found: list[SentText]) -> None:
    stack: list[tuple[Path, Any]] = [(at, root)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            use = _use(path, value)
            if use is not None:
                found.append(SentText(path, value, use))
        elif isinstance(value, dict):
            keyed = _shape(path) not in STRUCTURAL
            for key, item in reversed(value.items()):
                stack.append(((*path, key), item))
                if keyed:
                    stack.append(((*path, key), _Key(key)))
        elif isinstance(value, list):
            stack.extend(((*path, index), item) for index, item in reversed(list(enumerate(value))))
        elif isinstance(value, _Key):
            found.append(SentText(path, value.name, Use.AS_SENT, key=True))


@dataclass(frozen=True, slots=True)
class _Key:
    name: str


def with_sent_texts(
    job: JobRequest, messages: WireMessages | None, found: list[SentText], texts: list[str]
) -> tuple[JobRequest, WireMessages | None]:
    """The job and its messages with each :attr:`Use.READ` text replaced by ``texts`` (in
    :func:`sent_texts`' order); the rest are never rewritten (the caller blocks instead)."""
    changed = [
        (text.path, after)
        for text, after in zip(found, texts, strict=True)
        if text.use is Use.READ and after != text.text
    ]
    if not changed:
        return job, messages
    by_root: dict[str, list[tuple[Path, str]]] = {}
    for path, after in changed:
        by_root.setdefault(str(path[0]), []).append((path[1:], after))
    if "messages" in by_root and messages is not None:
        messages = _replaced(messages, by_root["messages"])
    update: dict[str, Any] = {}
    if "inputs" in by_root:
        inputs = _replaced(job.inputs, by_root["inputs"])
        update["input"] = inputs if isinstance(job.input, list) else inputs[0]
    if "params" in by_root and job.params is not None:
        fields: dict[str, list[tuple[Path, str]]] = {}
        for path, after in by_root["params"]:
            fields.setdefault(str(path[0]), []).append((path[1:], after))
        values = {
            name: _replaced(getattr(job.params, name), edits) for name, edits in fields.items()
        }
        update["params"] = job.params.model_copy(update=values)
    return (job.model_copy(update=update) if update else job), messages


def _replaced(root: Any, edits: Iterable[tuple[Path, str]]) -> Any:
    """``root`` with each path's string replaced: every container on a path is copied once,
    the rest shared."""
    owned: set[int] = set()

    def own(value: Any) -> Any:
        if id(value) in owned:
            return value
        copy: Any = list(value) if isinstance(value, list) else dict(value)
        owned.add(id(copy))
        return copy

    for path, after in edits:
        if not path:
            root = after  # the value itself (a parameter that is a string)
            continue
        root = own(root)
        node = root
        for step in path[:-1]:
            child = own(node[step])
            node[step] = child
            node = child
        node[path[-1]] = after
    return root
