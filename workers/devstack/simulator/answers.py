"""What the simulator answers a chat beyond text, whatever the wire: tool calls, structured
output, several answers, refusals — decided on a neutral request, rendered by each wire.

Deterministic rules (tests and the demo rely on them):
- tools offered and ``tool_choice`` not ``none``: while the last message is not a tool's
  answer, the model calls the named tool, or the first one (every tool with ``sim:parallel``
  in the prompt and parallel calls allowed); its arguments are the smallest instance of the
  tool's parameter schema. After a tool's answer it writes text.
- a JSON schema to follow: the answer is the smallest valid instance of it; ``json_object``:
  ``{"summary": …}``. ``sim:invalid_json`` in the prompt: an instance missing its required
  fields (it still parses), ``sim:broken_json``: text that does not parse,
  ``sim:batch_invalid_json``: the invalid instance through a Batch API only.
- ``sim:content_filter`` in the prompt: the wire's content-policy refusal (not from a model
  whose name has ``unfiltered``: a failover target).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from workers.devstack.simulator import behaviour

CONTENT_FILTER = "sim:content_filter"
INVALID_JSON = "sim:invalid_json"
BROKEN_JSON = "sim:broken_json"
BATCH_INVALID_JSON = "sim:batch_invalid_json"  # invalid through a Batch API, valid online
PARALLEL = "sim:parallel"
#: the longest string and array the simulator writes, whatever a schema's bounds ask for
#: (an array inside two others: one item), so an instance stays small
MAX_INSTANCE_CHARS = 256
MAX_INSTANCE_ITEMS = 16
UNFILTERED = "unfiltered"  # a simulated model with this in its name never refuses content


@dataclass(frozen=True, slots=True)
class Ask:
    """A chat request in neutral terms."""

    messages: list[dict[str, Any]]  # OpenAI shape: role, content (text or parts)
    max_tokens: int | None = None
    tools: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # name, parameters
    tool_choice: str | None = None  # None/auto, none, required, or a tool's name
    parallel: bool = True
    schema: dict[str, Any] | None = None  # the JSON schema to follow
    json_object: bool = False
    n: int = 1
    model: str = ""
    batch: bool = False  # asked through a Batch API


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    finish: str  # stop, length, tool_calls, content_filter
    tool_calls: list[tuple[str, str, str]] = field(default_factory=list)  # id, name, arguments
    output_tokens: int = 1


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def prompt(ask: Ask) -> str:
    return json.dumps(ask.messages)


def answer(ask: Ask, index: int = 0) -> Answer:
    everything = prompt(ask)
    if CONTENT_FILTER in everything and UNFILTERED not in ask.model:
        return Answer("", "content_filter", output_tokens=0)
    last = ask.messages[-1] if ask.messages else {}
    if ask.tools and ask.tool_choice != "none" and last.get("role") != "tool":
        return _tool_calls(ask, everything)
    if ask.schema is not None or ask.json_object:
        return _json(ask, everything, index)
    plain = [{"role": m.get("role"), "content": text_of(m.get("content"))} for m in ask.messages]
    if index:
        plain.append({"role": "user", "content": f"answer {index}"})
    text, tokens, finish = behaviour.completion(plain, ask.max_tokens)
    return Answer(text, finish, output_tokens=tokens)


def _tool_calls(ask: Ask, everything: str) -> Answer:
    chosen = [t for t in ask.tools if t[0] == ask.tool_choice] or ask.tools[:1]
    if PARALLEL in everything and ask.parallel and ask.tool_choice in (None, "auto", "required"):
        chosen = ask.tools
    calls = []
    for position, (name, parameters) in enumerate(chosen):
        value = {} if _invalid(ask, everything) else instance(parameters or {"type": "object"})
        arguments = json.dumps(value)
        digest = hashlib.sha256(f"{everything}:{position}".encode()).hexdigest()[:24]
        calls.append((f"call_{digest}", name, arguments))
    tokens = sum(behaviour.count_tokens(name + arguments) for _, name, arguments in calls)
    return Answer("", "tool_calls", calls, tokens)


def _invalid(ask: Ask, everything: str) -> bool:
    return INVALID_JSON in everything or (ask.batch and BATCH_INVALID_JSON in everything)


def _json(ask: Ask, everything: str, index: int) -> Answer:
    if BROKEN_JSON in everything:
        text = '{"summary": "unterminated'
    elif _invalid(ask, everything):
        text = "{}"
    elif ask.schema is not None:
        text = json.dumps(instance(ask.schema))
    else:
        user = text_of(ask.messages[-1].get("content")) if ask.messages else ""
        text = json.dumps({"summary": " ".join(user.split()[:12]), "answer": index})
    return Answer(text, "stop", output_tokens=behaviour.count_tokens(text))


def instance(schema: Any, depth: int = 0) -> Any:
    """The smallest value valid against a (simple) JSON schema: required properties only. Any
    JSON value is taken as a schema (``true``, ``false``, or what no schema is: ``null``)."""
    if depth > 16 or not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            return instance(branches[0], depth + 1)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
        return {name: instance(properties.get(name, {}), depth + 1) for name in names}
    if kind == "array":
        items = schema.get("items", {})
        most = MAX_INSTANCE_ITEMS if depth < 2 else 1
        return [instance(items, depth + 1) for _ in range(_count(schema.get("minItems"), 0, most))]
    if kind == "string":
        return "x" * _count(schema.get("minLength"), 1, MAX_INSTANCE_CHARS)
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return None


def _count(bound: Any, default: int, most: int) -> int:
    """A schema's minimum length, up to ``most`` (a bound that is not an integer: the
    default)."""
    if type(bound) is not int:
        return default
    return max(0, min(bound, most))


def input_tokens(messages: list[dict[str, Any]], *definitions: Any) -> int:
    """Prompt tokens, billed like the real providers bill them: text by characters (a
    message's ``name``, its tool calls and the id a tool answers included), each image or file
    a flat 85, and ``definitions`` — the tool definitions and the response schema the request
    carries, which every provider bills as input — by their JSON's characters."""
    total = 0
    for message in messages:
        content = message.get("content")
        total += behaviour.MESSAGE_OVERHEAD_TOKENS
        if isinstance(content, list):
            for part in content:
                is_text = isinstance(part, dict) and part.get("type") == "text"
                total += behaviour.count_tokens(part.get("text", "")) if is_text else 85
        else:
            total += behaviour.count_tokens(str(content or ""))
        for call in message.get("tool_calls") or ():
            total += behaviour.count_tokens(json.dumps(call))
        for key in ("name", "tool_call_id"):
            if isinstance(message.get(key), str):
                total += behaviour.count_tokens(message[key])
    for definition in definitions:
        if definition:
            total += behaviour.count_tokens(json.dumps(definition))
    return total


def openai_definitions(body: dict[str, Any]) -> tuple[Any, ...]:
    """What an OpenAI-wire request bills beyond its messages: tools, the response format and
    the predicted output (billed, when rejected, like completion tokens — counted here as
    prompt, the simulator has one count for both)."""
    return body.get("tools"), body.get("response_format"), body.get("prediction")


def anthropic_definitions(body: dict[str, Any]) -> tuple[Any, ...]:
    return (body.get("tools"),)  # a structured answer's schema travels as a forced tool


def gemini_definitions(body: dict[str, Any]) -> tuple[Any, ...]:
    config = body.get("generationConfig") or {}
    return body.get("tools"), config.get("responseJsonSchema") or config.get("responseSchema")


# -- each wire's request, in neutral terms ---------------------------------------------------


def from_openai(body: dict[str, Any], model: str, batch: bool = False) -> Ask:
    tools = [
        (t["function"]["name"], t["function"].get("parameters") or {})
        for t in body.get("tools") or ()
    ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = choice["function"]["name"]
    response_format = body.get("response_format") or {}
    schema = (response_format.get("json_schema") or {}).get("schema")
    return Ask(
        messages=body["messages"],
        max_tokens=body.get("max_tokens") or body.get("max_completion_tokens"),
        tools=tools,
        tool_choice=choice,
        parallel=body.get("parallel_tool_calls", True) is not False,
        schema=schema if response_format.get("type") == "json_schema" else None,
        json_object=response_format.get("type") == "json_object",
        n=int(body.get("n") or 1),
        model=model,
        batch=batch,
    )


def from_anthropic(body: dict[str, Any], messages: list[dict[str, Any]], batch: bool) -> Ask:
    """``messages``: the conversation already in OpenAI shape (tool_use/tool_result mapped)."""
    tools = [(t["name"], t.get("input_schema") or {}) for t in body.get("tools") or ()]
    choice = body.get("tool_choice") or {}
    kind = str(choice.get("type"))
    named = {"tool": choice.get("name"), "any": "required", "none": "none"}.get(kind)
    return Ask(
        messages=messages,
        max_tokens=body.get("max_tokens"),
        tools=tools,
        tool_choice=named,
        parallel=not choice.get("disable_parallel_tool_use", False),
        model=str(body.get("model")),
        batch=batch,
    )


def from_gemini(body: dict[str, Any], messages: list[dict[str, Any]], model: str) -> Ask:
    declarations = [
        (d["name"], d.get("parameters") or d.get("parametersJsonSchema") or {})
        for tool in body.get("tools") or ()
        for d in tool.get("functionDeclarations") or ()
    ]
    calling = ((body.get("toolConfig") or {}).get("functionCallingConfig")) or {}
    mode = calling.get("mode")
    named = (calling.get("allowedFunctionNames") or [None])[0]
    choice = {"NONE": "none", "ANY": named or "required"}.get(mode or "")
    config = body.get("generationConfig") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    return Ask(
        messages=messages,
        max_tokens=config.get("maxOutputTokens"),
        tools=declarations,
        tool_choice=choice,
        schema=schema,
        json_object=config.get("responseMimeType") == "application/json" and schema is None,
        n=int(config.get("candidateCount") or 1),
        model=model,
    )


def neutral_anthropic(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic turns as OpenAI-shaped messages (blocks → parts, tool_use → tool calls,
    tool_result → tool messages)."""
    neutral: list[dict[str, Any]] = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, list):
            neutral.append({"role": message.get("role"), "content": content})
            continue
        parts, calls = [], []
        for block in content:
            kind = block.get("type")
            if kind == "text":
                parts.append({"type": "text", "text": block.get("text", "")})
            elif kind in ("image", "document"):
                parts.append({"type": "image_url"})
            elif kind == "tool_use":
                arguments = json.dumps(block.get("input"))
                calls.append({"id": block.get("id"), "function": {"arguments": arguments}})
            elif kind == "tool_result":
                result = text_of(block.get("content"))
                neutral.append({"role": "tool", "content": result})
        if parts or calls:
            turn: dict[str, Any] = {"role": message.get("role"), "content": parts}
            if calls:
                turn["tool_calls"] = calls
            neutral.append(turn)
    return neutral


def neutral_gemini(contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    neutral: list[dict[str, Any]] = []
    for item in contents:
        role = "assistant" if item.get("role") == "model" else "user"
        parts, calls = [], []
        for part in item.get("parts") or []:
            if "text" in part:
                parts.append({"type": "text", "text": part["text"]})
            elif "inlineData" in part or "fileData" in part:
                parts.append({"type": "image_url"})
            elif "functionCall" in part:
                arguments = json.dumps(part["functionCall"].get("args"))
                calls.append({"function": {"arguments": arguments}})
            elif "functionResponse" in part:
                answer = json.dumps(part["functionResponse"].get("response"))
                neutral.append({"role": "tool", "content": answer})
        if parts or calls:
            turn: dict[str, Any] = {"role": role, "content": parts}
            if calls:
                turn["tool_calls"] = calls
            neutral.append(turn)
    return neutral


def has_media(messages: list[dict[str, Any]]) -> bool:
    return any(
        isinstance(m.get("content"), list)
        and any(p.get("type") != "text" for p in m["content"] if isinstance(p, dict))
        for m in messages
    )


# -- each wire's answer ------------------------------------------------------------------------


def openai_choices(ask: Ask, logprobs: bool) -> tuple[list[dict[str, Any]], int]:
    choices, tokens = [], 0
    for index in range(ask.n):
        said = answer(ask, index)
        tokens += said.output_tokens
        message: dict[str, Any] = {
            "role": "assistant",
            "content": said.text if said.finish not in ("tool_calls", "content_filter") else None,
            "refusal": None,
        }
        if said.tool_calls:
            message["tool_calls"] = [
                {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
                for cid, name, args in said.tool_calls
            ]
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": _logprobs(said.text) if logprobs else None,
                "finish_reason": said.finish,
            }
        )
    return choices, tokens


def _logprobs(text: str) -> dict[str, Any]:
    return {
        "content": [
            {"token": word, "logprob": -0.25, "bytes": list(word.encode()), "top_logprobs": []}
            for word in text.split()[:8]
        ],
        "refusal": None,
    }


ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def anthropic_content(ask: Ask) -> tuple[list[dict[str, Any]], str, int]:
    said = answer(ask)
    if said.finish == "content_filter":
        return [], "refusal", 0
    blocks: list[dict[str, Any]] = [{"type": "text", "text": said.text}] if said.text else []
    blocks += [
        {"type": "tool_use", "id": f"toolu_{cid[5:]}", "name": name, "input": json.loads(args)}
        for cid, name, args in said.tool_calls
    ]
    return blocks, ANTHROPIC_STOP[said.finish], said.output_tokens


GEMINI_STOP = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}


def gemini_candidates(ask: Ask) -> tuple[list[dict[str, Any]], int]:
    candidates, tokens = [], 0
    for index in range(ask.n):
        said = answer(ask, index)
        tokens += said.output_tokens
        if said.finish == "content_filter":
            candidates.append({"finishReason": "SAFETY", "index": index})
            continue
        parts: list[dict[str, Any]] = [{"text": said.text}] if said.text else []
        parts += [
            {"functionCall": {"name": name, "args": json.loads(args)}}
            for _, name, args in said.tool_calls
        ]
        candidates.append(
            {
                "content": {"parts": parts, "role": "model"},
                "finishReason": GEMINI_STOP[said.finish],
                "index": index,
            }
        )
    return candidates, tokens
