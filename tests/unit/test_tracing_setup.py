"""Tracing is configured by OpenTelemetry's standard variables, off unless asked for, and a
bad value is refused with its name; trace context round-trips through record headers."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from broker.errors import ConfigError
from broker.tracing import context_from, trace_headers
from workers.telemetry.tracing import Tracing


def test_tracing_is_off_unless_an_exporter_is_named() -> None:
    assert not Tracing.from_env({}).enabled
    assert not Tracing.from_env({"OTEL_TRACES_EXPORTER": "none"}).enabled


def test_dev_defaults_to_the_console_exporter_and_otel_sdk_disabled_wins() -> None:
    tracing = Tracing.from_env({}, default_exporter="console")
    assert tracing.enabled
    tracing.close()
    disabled = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}
    assert not Tracing.from_env(disabled).enabled


def test_otlp_over_http_is_built_from_the_standard_variables() -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    tracing = Tracing.from_env(env)
    assert tracing.enabled
    tracing.close()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_an_unsupported_setting_is_refused_by_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Tracing.from_env(env)


def test_trace_context_round_trips_through_record_headers() -> None:
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("producer") as span:
        headers = trace_headers()
    assert [name for name, _ in headers] == ["traceparent"]
    context = context_from(headers)
    assert context is not None
    parent = trace.get_current_span(context).get_span_context()
    assert parent.trace_id == span.get_span_context().trace_id
    assert parent.is_remote


@pytest.mark.parametrize(
    "headers",
    [None, [], [("traceparent", b"garbage")], [("traceparent", b"\xff\xfe")], [("x", b"1")]],
)
def test_a_missing_or_malformed_traceparent_starts_no_parent(
    headers: list[tuple[str, bytes]] | None,
) -> None:
    assert context_from(headers) is None


def test_without_a_current_span_no_headers_are_written() -> None:
    assert trace_headers() == []
