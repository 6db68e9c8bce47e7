"""An answer's texts, out and back in: what the output guardrails check and restore (the
texts a request sends are ``workers/content/sent_texts.py``'s)."""

from __future__ import annotations

from typing import Any

from schemas.results import ChatOutput


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
