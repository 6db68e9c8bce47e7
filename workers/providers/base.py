"""The Provider protocol, the call/response values, and the one place provider errors are mapped.

Adapters build requests and read responses; :func:`raise_for_status` and
:func:`transport_errors` turn HTTP statuses and httpx exceptions into the tree in
``broker/errors.py`` (retryable vs permanent, with ``retry_after``).
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import httpx

from broker.config import ProviderConfig
from broker.errors import (
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderContentFiltered,
    ProviderError,
    ProviderOverloaded,
    ProviderRateLimited,
    ProviderResponseError,
    ProviderServerError,
    ProviderTimeout,
)
from schemas.jobs import Params
from schemas.results import ChatOutput, Choice, ToolCallOut
from workers.providers.http import post_json
from workers.telemetry.logs import redact

MAX_ERROR_MESSAGE = 500
_NONE = (None, None, None, None)


#: chat messages as sent: OpenAI's shape (``role``, ``content`` text or parts, tool calls);
#: each adapter maps them to its wire format
WireMessages = list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ChatCall:
    model: str
    messages: WireMessages
    params: Params | None = None
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingCall:
    model: str
    inputs: list[str]
    dimensions: int | None = None
    job_id: str | None = None
    user: str | None = None  # OpenAI's end-user id, sent to OpenAI-type providers as it is


@dataclass(frozen=True, slots=True)
class ChatResponse:
    """A chat answer; made inside :class:`transport_errors`, so an answer that breaks these
    rules is a ``ProviderResponseError``, never a headway bug."""

    text: str
    finish_reason: str
    input_tokens: int
    output_tokens: int
    estimated: bool = False  # the provider reported no usage: the tokens are our estimate
    tool_calls: list[ToolCallOut] | None = None
    refusal: str | None = None
    logprobs: dict[str, Any] | None = None
    choices: list[Choice] | None = None  # every answer, when the job asked for n > 1
    system_fingerprint: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not isinstance(self.finish_reason, str):
            raise ValueError("content and finish reason must be strings")
        _check_tokens(self.input_tokens, self.output_tokens)

    def output(self) -> ChatOutput:
        """The answer as a result carries it."""
        extras = (self.tool_calls, self.refusal, self.choices, self.logprobs)
        if extras == _NONE:  # text only: the common case
            if self.system_fingerprint is None:
                return ChatOutput(text=self.text, finish_reason=self.finish_reason)
            return ChatOutput(
                text=self.text,
                finish_reason=self.finish_reason,
                system_fingerprint=self.system_fingerprint,
            )
        return ChatOutput(
            text=self.text,
            finish_reason=self.finish_reason,
            tool_calls=self.tool_calls,
            refusal=self.refusal,
            logprobs=self.logprobs,
            choices=self.choices,
            system_fingerprint=self.system_fingerprint,
        )


@dataclass(frozen=True, slots=True)
class EmbeddingResponse:
    embeddings: list[list[float]]
    input_tokens: int
    estimated: bool = False

    def __post_init__(self) -> None:
        _check_tokens(self.input_tokens)
        for vector in self.embeddings:
            # fsum raises on anything not a number and overflows on absurd ones
            try:
                finite = isinstance(vector, list) and math.isfinite(math.fsum(vector))
            except (TypeError, OverflowError):
                finite = False
            if not finite:
                raise ValueError("an embedding must be a list of finite numbers")


#: the most tokens one call may report (beyond any model's context): more is a broken answer
MAX_TOKENS_PER_CALL = 100_000_000
#: the longest a provider may ask to be left alone (Retry-After) before it is asked again
MAX_RETRY_AFTER_S = 3600.0


def _check_tokens(*counts: int) -> None:
    for count in counts:
        if type(count) is not int or not 0 <= count <= MAX_TOKENS_PER_CALL:
            raise ValueError(f"token count {count!r} is not an integer in 0..{MAX_TOKENS_PER_CALL}")


class Provider(Protocol):
    """One provider account. Adapters share the worker's ``httpx.AsyncClient``."""

    name: str

    async def chat(self, call: ChatCall) -> ChatResponse: ...

    async def embed(self, call: EmbeddingCall) -> EmbeddingResponse: ...


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        with contextlib.suppress(ValueError):
            return _bounded(float(milliseconds) / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return _bounded(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return _bounded(when.timestamp() - time.time())


def _bounded(seconds: float) -> float | None:
    """A wait within 0..MAX_RETRY_AFTER_S; None for NaN."""
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def error_message(response: httpx.Response) -> str:
    """The provider's own error message where the body has one (OpenAI/Anthropic/Gemini shape),
    credentials in it redacted (a 401 may echo the key it was sent)."""
    return redact(_error_text(response))


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:MAX_ERROR_MESSAGE] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:MAX_ERROR_MESSAGE]
    if isinstance(error, str):
        return error[:MAX_ERROR_MESSAGE]
    return str(body)[:MAX_ERROR_MESSAGE]


def raise_for_status(
    response: httpx.Response,
    provider: str,
    *,
    retry_after: float | None = None,
    overloaded: bool = False,
) -> None:
    """Map a non-2xx response into the provider error tree.

    Adapters pass what only their wire format says: a ``retry_after`` read from the body
    (Gemini's RetryInfo) and ``overloaded`` (Anthropic's ``overloaded_error``)."""
    status = response.status_code
    if status < 400:
        return
    message = error_message(response)
    if retry_after is None:
        retry_after = parse_retry_after(response.headers)
    kwargs: dict[str, Any] = {
        "status_code": status,
        "retry_after": retry_after,
        "provider": provider,
    }
    error: ProviderError
    if status == 429:
        error = ProviderRateLimited(message, **kwargs)
    elif overloaded or status in (503, 529):
        error = ProviderOverloaded(message, **kwargs)
    elif status >= 500 or status == 408:
        error = ProviderServerError(message, **kwargs)
    elif status in (401, 403):
        error = ProviderAuthError(message, **kwargs)
    elif _error_code(response) == "content_filter":  # Azure OpenAI's content filter
        error = ProviderContentFiltered(message, **kwargs)
    else:
        error = ProviderBadRequest(message, **kwargs)
    raise error


def _error_code(response: httpx.Response) -> str | None:
    body = json_body(response)
    error = body.get("error") if body else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def json_body(response: httpx.Response) -> dict[str, Any] | None:
    """The response body as a JSON object, or None."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class transport_errors:  # used like a function: ``with transport_errors(name):``
    """Map httpx's transport exceptions (and a body we cannot decode) into the tree.

    A class, not ``@contextmanager``: it wraps every provider call three times, and a generator
    context manager costs several times more per use."""

    __slots__ = ("provider",)

    def __init__(self, provider: str) -> None:
        self.provider = provider

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if error is None:
            return
        provider = self.provider
        if isinstance(error, ProviderError):  # raised by an adapter's reading: attribute it
            if error.provider is None:
                error.provider = provider
            return
        if isinstance(error, httpx.TimeoutException):
            raise ProviderTimeout(f"timed out: {error!r}", provider=provider) from error
        if isinstance(error, httpx.TransportError):
            message = f"connection failed: {error!r}"
            raise ProviderConnectionError(message, provider=provider) from error
        if isinstance(error, httpx.DecodingError):  # a body too large, or not decodable
            raise ProviderResponseError(
                f"unreadable response: {error}", provider=provider
            ) from error
        if isinstance(error, ValueError | KeyError | IndexError | TypeError | AttributeError):
            message = f"unreadable response: {error!r}"
            raise ProviderResponseError(message, provider=provider) from error


SYSTEM_ROLES = frozenset({"system", "developer"})


def split_system(messages: WireMessages) -> tuple[list[str], WireMessages]:
    """System and developer messages' texts, and the rest of the conversation (for APIs that
    take the system prompt apart: Anthropic, Gemini)."""
    system = [text_of(m["content"]) for m in messages if m["role"] in SYSTEM_ROLES]
    return system, [m for m in messages if m["role"] not in SYSTEM_ROLES]


def text_of(content: str | list[dict[str, Any]] | None) -> str:
    """A message's text: the string, or its text parts joined (other parts have none)."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part["text"] for part in content if part["type"] == "text")


class JsonHttpProvider:
    """What the HTTP adapters share: a name, the worker's client, timeouts, and one JSON POST
    whose failures are mapped into the error tree. Adapters add what their wire format says
    differently about errors by overriding :meth:`error_details`."""

    def __init__(self, name: str, config: ProviderConfig, client: httpx.AsyncClient) -> None:
        self.name = name
        self._client = client
        self._timeout = httpx.Timeout(config.timeout_s, connect=min(config.timeout_s, 10.0))

    def error_details(self, response: httpx.Response) -> tuple[float | None, bool]:
        """(retry_after from the body, overloaded) for an error response; headers are read
        by :func:`raise_for_status` itself."""
        return None, False

    async def post(self, url: httpx.URL, body: dict[str, Any], headers: dict[str, str]) -> Any:
        with transport_errors(self.name):
            reply = await post_json(self._client, url, body, headers, self._timeout)
        if reply.status_code >= 400:
            response = reply.response()
            retry_after, overloaded = self.error_details(response)
            raise_for_status(response, self.name, retry_after=retry_after, overloaded=overloaded)
        with transport_errors(self.name):
            return json.loads(reply.content)
