"""What a job may carry beyond text, and what that asks of a deployment: the strict schema of
content parts, roles, tools and OpenAI's parameters; a job's needs, each provider type's
capabilities and bounds; image and PDF estimates; the texts guardrails see; structured output."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest
from pydantic import ValidationError

from broker.capabilities import BY_PROVIDER_TYPE, Feature
from schemas.jobs import JobRequest
from schemas.results import JobResult
from workers.calls import tokens
from workers.content import media, sent_texts, structured
from workers.content.features import needs, refusal
from workers.intake.parsing import describe_validation_error

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP4z8DwHwAFAAH/q842iQAAAABJRU5ErkJggg=="
)


def job(messages: Any = None, kind: str = "chat", **extra: Any) -> JobRequest:
    data: dict[str, Any] = {"job_id": "j", "tenant": "t", "kind": kind, "route": "r", **extra}
    if kind == "chat":
        data["messages"] = messages or [{"role": "user", "content": "hi"}]
    return JobRequest.model_validate(data)


def error_of(messages: Any = None, **extra: Any) -> str:
    with pytest.raises(ValidationError) as raised:
        job(messages, **extra)
    return describe_validation_error(raised.value)


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.mark.parametrize(
    ("messages", "extra", "named"),
    [
        ([{"role": "system", "content": [image("https://x/a.png")]}], {}, "for user messages"),
        ([{"role": "tool", "content": "x"}], {}, "tool_call_id"),
        ([{"role": "user", "content": "x", "tool_call_id": "c"}], {}, "tool_call_id"),
        (
            [{"role": "user", "content": "x", "tool_calls": [{"id": "c", "function": {}}]}],
            {},
            "tool_calls",
        ),
        ([{"role": "user", "content": [image("http://x/a.png")]}], {}, "https://"),
        ([{"role": "user", "content": [image(data_url("image/tiff", b"x"))]}], {}, "image/tiff"),
        (
            [{"role": "user", "content": [{"type": "file", "file": {"file_data": "file-abc"}}]}],
            {},
            "data:application/pdf",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "x"}}
                    ],
                }
            ],
            {},
            "not JSON",
        ),
        (None, {"params": {"tool_choice": "required"}}, "needs tools"),
        (
            None,
            {
                "params": {
                    "tools": [{"type": "function", "function": {"name": "f"}}],
                    "tool_choice": {"type": "function", "function": {"name": "g"}},
                }
            },
            "no tool named 'g'",
        ),
        (None, {"params": {"top_logprobs": 2}}, "needs logprobs"),
        (None, {"params": {"max_tokens": 5, "max_completion_tokens": 5}}, "not both"),
        (None, {"params": {"dimensions": 8}}, "params.dimensions: not a parameter of chat"),
        (None, {"params": {"n": 0}}, "params.n"),
    ],
)
def test_a_malformed_rich_job_is_refused_naming_the_field(
    messages: Any, extra: dict[str, Any], named: str
) -> None:
    assert named in error_of(messages, **extra)


def test_tools_are_not_a_parameter_of_embedding_jobs() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert "not a parameter of embedding" in error_of(
        kind="embedding", input="x", params={"tools": tools}
    )


def test_a_result_with_an_error_code_from_a_newer_headway_is_read_as_text() -> None:
    result = JobResult.model_validate(
        {
            "job_id": "j",
            "tenant": "t",
            "status": "failed",
            "error": {"code": "region_unavailable", "message": "m"},
            "completed_at": "2026-12-01T00:00:00Z",
        }
    )
    assert result.error is not None and result.error.code == "region_unavailable"


def test_a_text_job_needs_nothing_and_a_rich_one_names_where_each_feature_is_first_used() -> None:
    plain = job()
    assert not needs(plain, [{"role": "user", "content": "hi"}])
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "x"}, image("https://x/a.png")]},
        {"role": "user", "content": [image(data_url("image/png", PNG))], "name": "ann"},
    ]
    rich = job(messages, params={"n": 2, "seed": 1, "logprobs": True, "metadata": {"a": "b"}})

    found = needs(rich, messages)

    assert found.features == {
        Feature.IMAGE_URL: "messages.0.content.1",
        Feature.IMAGE_DATA: "messages.1.content.0",
        Feature.MESSAGE_NAMES: "messages.1.name",
        Feature.N: "params.n",
        Feature.SEED: "params.seed",
        Feature.LOGPROBS: "params.logprobs",
        Feature.METADATA: "params.metadata",
    }
    assert found.largest_image == (len(PNG), "messages.1.content.0")


@pytest.mark.parametrize(
    ("provider_type", "refused"),
    [
        ("openai", None),
        ("azure_openai", None),
        ("anthropic", "params.n: n"),
        ("gemini", "messages.0.content.0: image_url"),
    ],
)
def test_each_provider_type_refuses_the_first_feature_it_lacks(
    provider_type: str, refused: str | None
) -> None:
    messages = [{"role": "user", "content": [image("https://x/a.png")]}]
    found = needs(job(messages, params={"n": 2}), messages)

    assert refusal(found, BY_PROVIDER_TYPE[provider_type], provider_type) == refused


def test_an_inline_image_over_a_provider_types_bound_is_refused_with_the_bound() -> None:
    big = data_url("image/png", PNG + b"\x00" * (6 * 1024 * 1024))
    messages = [{"role": "user", "content": [image(big)]}]
    found = needs(job(messages), messages)

    assert refusal(found, BY_PROVIDER_TYPE["openai"], "openai") is None
    why = refusal(found, BY_PROVIDER_TYPE["anthropic"], "anthropic")
    assert why is not None and "the limit is 5242880" in why


def _gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00" * 8


def _jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + (16).to_bytes(2, "big") + b"JFIF\x00" + b"\x00" * 9
    sof = b"\xff\xc0" + (17).to_bytes(2, "big") + b"\x08" + struct.pack(">HH", height, width)
    return b"\xff\xd8" + app0 + sof + b"\x00" * 12


def _webp(width: int, height: int) -> bytes:
    vp8x = b"VP8X" + (10).to_bytes(4, "little") + b"\x00" * 4
    size = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + b"\x00" * 4 + b"WEBP" + vp8x + size


@pytest.mark.parametrize(
    ("data", "size"),
    [(PNG, (1, 1)), (_gif(640, 480), (640, 480)), (_jpeg(1024, 768), (1024, 768)),
     (_webp(2000, 1000), (2000, 1000)), (b"not an image", None)],
)  # fmt: skip
def test_an_images_dimensions_are_read_from_its_first_bytes(
    data: bytes, size: tuple[int, int] | None
) -> None:
    assert media.dimensions(data) == size


def test_image_estimates_take_the_dearest_providers_rule_and_urls_count_the_most() -> None:
    # OpenAI low 85; Anthropic 512*512/750 = 350; Gemini 3: 1,120 an image (2.x: 1 tile, 258)
    assert media.image_tokens((512, 512), "low") == 1120
    assert media.image_tokens((300, 200), None) == 258  # Gemini 2.x: small, one flat 258
    # OpenAI: fitted to 768 x 768, 4 tiles = 765; Anthropic: 1024 * 1024 / 750 = 1399
    assert media.image_tokens((1024, 1024), "high") == 1399
    assert media.image_tokens((2048, 512), "high") == 1120  # 765; 1568 x 392 / 750 = 820
    assert media.image_tokens((4000, 3000), "high") == 258 * 6 * 4  # Gemini 2.x: 24 tiles
    assert media.url_image_tokens("https://x/a.png", "low") == media.UNKNOWN_IMAGE_TOKENS
    assert media.url_image_tokens(data_url("image/gif", _gif(1024, 1024)), None) == 1399


def test_a_pdf_counts_its_pages_and_a_chat_estimate_counts_images_and_files() -> None:
    pdf = b"%PDF-1.4 << /Type /Pages >> << /Type /Page >> << /Type /Page >> %%EOF"
    assert media.pdf_pages(pdf) == 2
    file_part = {"type": "file", "file": {"file_data": data_url("application/pdf", pdf)}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "abcd"}, file_part]}]
    assert tokens.message_tokens(messages) == 1 + 2 * media.PDF_PAGE_TOKENS + 4


def test_n_answers_reserve_n_times_the_output_allowance() -> None:
    assert tokens.output_allowance(job(params={"max_completion_tokens": 100, "n": 3})) == 300


def test_the_texts_guardrails_see_go_back_where_they_came_from() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, image("https://x/a.png")]},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c", "content": "b"},
    ]  # fmt: skip
    request = job(messages=messages)
    found = sent_texts.sent_texts(request, messages)
    read = [t.text for t in found if t.use is sent_texts.Use.READ]
    assert read == ["a", "{}", "b"]
    after = {"a": "A", "{}": '{"x": 1}', "b": "B"}
    texts = [after.get(t.text, t.text) if t.use is sent_texts.Use.READ else t.text for t in found]
    same, rebuilt = sent_texts.with_sent_texts(request, messages, found, texts)
    assert same is request and rebuilt is not None
    assert (
        rebuilt[0]["content"][0]["text"] == "A"
        and rebuilt[0]["content"][1] is messages[0]["content"][1]
    )
    assert rebuilt[1]["tool_calls"][0]["function"]["arguments"] == '{"x": 1}'
    assert rebuilt[2] == {"role": "tool", "tool_call_id": "c", "content": "B"}
    assert messages[0]["content"][0]["text"] == "a"  # the messages given are not changed


async def test_structured_output_is_parsed_checked_and_the_first_error_named_with_its_path() -> (
    None
):
    schema = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "integer"}}},
    }
    assert (await structured.check('{"items": [1, 2]}', schema)).parsed == {"items": [1, 2]}
    assert (
        await structured.check('{"items": [1, "2"]}', schema)
    ).error == "items/1: '2' is not of type 'integer'"
    not_json = (await structured.check("{oops", schema)).error or ""
    assert not_json.startswith("the answer is not JSON")
    assert structured.expected({"type": "text"}) is None
    assert structured.expected({"type": "json_object"}) == {"type": "object"}


@pytest.mark.parametrize(
    ("response_format", "named"),
    [
        ({"type": "xml"}, "response_format: {'type'"),
        ({"type": "json_schema"}, "response_format.json_schema: an object"),
        ({"type": "json_schema", "json_schema": {"name": "a b"}}, "json_schema.name"),
        (
            {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "thing"}}},
            "json_schema.schema: 'thing' is not valid",
        ),
    ],
)
def test_a_response_format_headway_cannot_check_is_refused_at_intake(
    response_format: dict[str, Any], named: str
) -> None:
    assert named in error_of(params={"response_format": response_format})


async def test_a_refusal_is_an_answer_and_a_schema_that_cannot_be_applied_is_an_error() -> None:
    from schemas.results import ChatOutput

    refused = ChatOutput(text="", finish_reason="stop", refusal="I can't help with that.")
    assert await structured.checked_output(refused, {"type": "object"}) is refused
    looping = {"$ref": "#"}
    error = (await structured.check("{}", looping)).error or ""
    assert error.startswith("the schema cannot be applied")
