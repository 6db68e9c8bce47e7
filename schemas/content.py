"""What a chat message may carry beyond text, in OpenAI's chat-completions shapes: content parts
(text, images, files), tool definitions, and the tool calls an assistant made.

Strict like every input: an unknown key is refused by name. Other providers' wire formats are
mapped from these shapes in their adapters (``workers/providers/``); a part or a feature a
deployment cannot take is refused at routing (``workers/providers/features.py``).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas import json_schema

#: the most parts one message may have (OpenAI's own limit on images per request is far lower)
MAX_PARTS = 500
MAX_TOOLS = 128  # OpenAI's limit on tools per request
#: function names: what every provider accepts (OpenAI: a-z, A-Z, 0-9, _ and -, 64 at most)
FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"
#: a data URL: ``data:<mime>;base64,<payload>``
DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,", re.ASCII)
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def data_url_type(url: str) -> str | None:
    """The MIME type of a ``data:…;base64,`` URL, or None for any other URL."""
    match = DATA_URL.match(url)
    return match.group(1).lower() if match else None


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageUrl(_Strict):
    url: Annotated[str, Field(min_length=1)]
    detail: Literal["auto", "low", "high"] | None = None

    @field_validator("url")
    @classmethod
    def _https_or_data(cls, url: str) -> str:
        if url.startswith("https://"):
            return url
        mime = data_url_type(url)
        if mime is None:
            raise ValueError("an image URL is https:// or data:<image type>;base64,…")
        if mime not in IMAGE_TYPES:
            raise ValueError(f"{mime} is not an image type headway sends ({sorted(IMAGE_TYPES)})")
        return url


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


class FileData(_Strict):
    """A PDF sent inline (OpenAI's ``file`` part): ``file_data`` is a data URL."""

    file_data: Annotated[str, Field(min_length=1)]
    filename: Annotated[str, Field(min_length=1, max_length=255)] | None = None

    @field_validator("file_data")
    @classmethod
    def _is_data_url(cls, data: str) -> str:
        if data_url_type(data) != "application/pdf":
            raise ValueError(
                "file_data is a PDF as a data URL (data:application/pdf;base64,…); uploaded "
                "file ids and other document types are not supported"
            )
        return data


class FilePart(_Strict):
    type: Literal["file"]
    file: FileData


ContentPart = Annotated[TextPart | ImagePart | FilePart, Field(discriminator="type")]
Content = str | Annotated[list[ContentPart], Field(min_length=1, max_length=MAX_PARTS)]


class FunctionCall(_Strict):
    name: Annotated[str, Field(pattern=FUNCTION_NAME)]
    arguments: str  # a JSON object's text, as the model wrote it

    @field_validator("arguments")
    @classmethod
    def _a_json_object(cls, arguments: str) -> str:
        try:
            value = json.loads(arguments)
        except ValueError:
            raise ValueError("arguments: not JSON") from None
        if not isinstance(value, dict):
            raise ValueError("arguments: a JSON object's text")
        return arguments


class ToolCall(_Strict):
    id: Annotated[str, Field(min_length=1, max_length=256)]
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDefinition(_Strict):
    name: Annotated[str, Field(pattern=FUNCTION_NAME)]
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: Annotated[str, Field(pattern=FUNCTION_NAME)]


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice
Tools = Annotated[list[Tool], Field(min_length=1, max_length=MAX_TOOLS)]


FORMAT_TYPES = ("text", "json_object", "json_schema")
JSON_SCHEMA_KEYS = frozenset({"name", "description", "schema", "strict"})
SCHEMA_FIELD = "response_format.json_schema.schema"
#: the validation context in which a job's schemas are checked for their structure only (a
#: worker's intake, on its event loop): :func:`check_schema` is run on them later
STRUCTURE_ONLY = {"schemas": "structure only"}


def check_response_format(value: dict[str, Any], deep: bool = True) -> dict[str, Any]:
    """OpenAI's ``response_format``, checked: its type, and for ``json_schema`` a name and a
    JSON Schema a worker can apply to the answer (``schemas/json_schema.py``). ``deep`` false:
    the schema's structure only; its meta-schema and patterns are left to :func:`check_schema`
    (a worker runs that off its event loop)."""
    kind = value.get("type")
    if kind not in FORMAT_TYPES or set(value) - {"type", "json_schema"}:
        raise ValueError(f"response_format: {{'type': one of {FORMAT_TYPES}}} (+ json_schema)")
    if kind != "json_schema":
        return value
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or set(spec) - JSON_SCHEMA_KEYS:
        raise ValueError(f"response_format.json_schema: an object of {sorted(JSON_SCHEMA_KEYS)}")
    if not isinstance(spec.get("name"), str) or not re.match(FUNCTION_NAME, spec["name"]):
        raise ValueError("response_format.json_schema.name: 1-64 letters, digits, '_' or '-'")
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise ValueError(f"{SCHEMA_FIELD}: a JSON Schema object")
    if deep:
        json_schema.check(schema, SCHEMA_FIELD)
    else:
        json_schema.admit(schema, SCHEMA_FIELD)
    return value


def check_schema(response_format: dict[str, Any] | None) -> str | None:
    """Why a ``response_format`` admitted with ``deep`` false is not one a worker can apply
    (its meta-schema, its patterns), in intake's words; None: it is."""
    schema = ((response_format or {}).get("json_schema") or {}).get("schema")
    if (response_format or {}).get("type") != "json_schema" or not isinstance(schema, dict):
        return None
    try:
        json_schema.check(schema, SCHEMA_FIELD)
    except ValueError as error:
        return f"params.response_format: {error}"
    except RecursionError:
        return f"params.response_format: {SCHEMA_FIELD}: nested too deeply"
    return None
