"""Every text a provider will read in a chat's messages, out and back in: what the guardrails
screen (and may redact) and what the output guardrails restore.

A message's texts, in order: its content string or each text part's text, then each of its
tool calls' arguments (a tool message's content is its answer). Images and files carry no
text the guardrails can read; they are sent as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from schemas.results import ChatOutput


def texts_of(messages: list[dict[str, Any]]) -> list[str]:
    return list(_texts(messages))


def _texts(messages: list[dict[str, Any]]) -> Iterator[str]:
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            yield from (part["text"] for part in content if part["type"] == "text")
        for call in message.get("tool_calls") or ():
            yield call["function"]["arguments"]


def with_texts(messages: list[dict[str, Any]], texts: list[str]) -> list[dict[str, Any]]:
    """``messages`` with their texts replaced, in :func:`texts_of`'s order."""
    replacements = iter(texts)
    rebuilt = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str) and len(message) == 2:
            rebuilt.append({"role": message["role"], "content": next(replacements)})
            continue
        copy = dict(message)
        if isinstance(content, str):
            copy["content"] = next(replacements)
        elif isinstance(content, list):
            copy["content"] = [
                {"type": "text", "text": next(replacements)} if part["type"] == "text" else part
                for part in content
            ]
        if message.get("tool_calls"):
            copy["tool_calls"] = [
                {**call, "function": {**call["function"], "arguments": next(replacements)}}
                for call in message["tool_calls"]
            ]
        rebuilt.append(copy)
    return rebuilt


def output_texts(output: ChatOutput) -> list[str]:
    """An answer's texts the output guardrails check and restore: the text, then each tool
    call's arguments, for the answer and for each of its ``n`` choices."""
    texts = [output.text, *(call.function.arguments for call in output.tool_calls or ())]
    for choice in output.choices or ():
        texts += [choice.text, *(call.function.arguments for call in choice.tool_calls or ())]
    return texts


def with_output_texts(output: ChatOutput, texts: list[str]) -> ChatOutput:
    replacements = iter(texts)

    def calls(found: Any) -> Any:
        if not found:
            return found
        return [
            call.model_copy(
                update={
                    "function": call.function.model_copy(update={"arguments": next(replacements)})
                }
            )
            for call in found
        ]

    text = next(replacements)
    update: dict[str, Any] = {"text": text, "tool_calls": calls(output.tool_calls)}
    if output.choices:
        update["choices"] = [
            choice.model_copy(
                update={"text": next(replacements), "tool_calls": calls(choice.tool_calls)}
            )
            for choice in output.choices
        ]
    return output.model_copy(update=update)
