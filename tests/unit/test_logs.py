"""Log lines name their job, tenant and trace, and never carry a secret."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider

from workers.telemetry.logs import REDACTED, JsonFormatter, Redactor, TextFormatter, job_context


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("headway.test", logging.WARNING, __file__, 1, message, args, None)
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_a_json_line_names_the_job_tenant_and_trace_where_known() -> None:
    formatter = JsonFormatter(Redactor())
    bare = json.loads(formatter.format(record("starting %s", "up")))
    assert bare["message"] == "starting up" and bare["level"] == "WARNING"
    assert bare["logger"] == "headway.test" and bare["ts"].endswith("Z")
    assert "job_id" not in bare and "trace_id" not in bare
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("job") as span, job_context("j-1", "acme"):
        line = json.loads(formatter.format(record("waiting", deployment="sim-a")))
    assert line["job_id"] == "j-1" and line["tenant"] == "acme"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["deployment"] == "sim-a"  # extra= fields are kept


def test_the_job_context_ends_with_its_block() -> None:
    with job_context("j-1", "acme"):
        pass
    line = json.loads(JsonFormatter(Redactor()).format(record("after")))
    assert "job_id" not in line


def test_a_text_line_ends_with_the_tenant_and_job() -> None:
    with job_context("j-2", "acme"):
        text = TextFormatter(Redactor()).format(record("parked"))
    assert text.endswith("parked [tenant=acme job_id=j-2]")


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("calling with Authorization: Bearer abc.def-123", "abc.def-123"),
        ("key sk-proj-AbCdEf0123456789 refused", "sk-proj-AbCdEf0123456789"),
        ("anthropic sk-ant-api03-XyZ0123456789 refused", "sk-ant-api03-XyZ0123456789"),
        ("GET /v1beta/models/x:generateContent?key=AIzaSyA-123456&alt=sse", "AIzaSyA-123456"),
        ('{"api_key": "hunter2-hunter2"}', "hunter2-hunter2"),
        ("x-api-key: 0123456789abcdef", "0123456789abcdef"),
        ("password=correct-horse-battery", "correct-horse-battery"),
    ],
)
def test_credential_shaped_text_is_redacted(text: str, secret: str) -> None:
    line = json.loads(JsonFormatter(Redactor()).format(record(text)))
    assert secret not in line["message"] and REDACTED in line["message"]


def test_known_secret_values_are_redacted_in_messages_exceptions_and_extras() -> None:
    formatter = JsonFormatter(Redactor(["plain-looking-value-42"]))
    try:
        raise RuntimeError("failed with plain-looking-value-42")
    except RuntimeError:
        import sys

        made = record("got plain-looking-value-42", note="plain-looking-value-42 here")
        made.exc_info = sys.exc_info()
    text = formatter.format(made)
    assert "plain-looking-value-42" not in text
    line = json.loads(text)
    assert REDACTED in line["message"] and REDACTED in line["exception"]
    assert line["note"] == f"{REDACTED} here"
