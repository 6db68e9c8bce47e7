"""W3C trace context carried in Kafka record headers (``traceparent``, ``tracestate``).

The producer SDK writes the context of its span into each job record; the worker reads it
back to continue the trace, and writes its job span's context onto the result record. Any
client in any language can do the same with its own OpenTelemetry propagator.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from broker.topics import HEADER_TRACEPARENT, HEADER_TRACESTATE

Headers = list[tuple[str, bytes]]

_PROPAGATOR = TraceContextTextMapPropagator()
_NAMES = (HEADER_TRACEPARENT, HEADER_TRACESTATE)


def trace_headers(context: Context | None = None) -> Headers:
    """The headers for the current span (or ``context``'s); none when there is no valid span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context)
    return [(name, value.encode("ascii", "replace")) for name, value in carrier.items()]


def context_from(headers: Sequence[tuple[str, bytes | None]] | None) -> Context | None:
    """The remote parent a record's headers name, or None (no header, or a malformed one)."""
    carrier = {
        name: value.decode("latin-1")
        for name, value in headers or ()
        if name in _NAMES and isinstance(value, bytes | bytearray)
    }
    if HEADER_TRACEPARENT not in carrier:
        return None
    try:
        context = _PROPAGATOR.extract(carrier)
    except Exception:  # a propagator must not stop a job over a malformed header
        return None
    return context or None
