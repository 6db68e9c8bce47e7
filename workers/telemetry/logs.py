"""Log lines: JSON for machines or text for people, each naming its job, tenant and trace.

``HEADWAY_LOG_FORMAT`` is ``json``, ``text`` or ``auto`` (JSON unless stderr is a terminal);
``HEADWAY_LOG_LEVEL`` the level. A JSON line carries ``ts``, ``level``, ``logger``,
``message``, and where known ``job_id``, ``tenant``, ``trace_id``/``span_id`` (the current
span), ``exception`` and any ``extra=`` fields. Secrets never reach a line: the values of the
environment variables the config names (provider keys, signing secrets) and anything shaped
like a credential (``Bearer …``, ``sk-…``, ``api-key: …``, ``?key=…``) are replaced by
``[REDACTED]`` — in the message, the exception text and the extra fields.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

from opentelemetry import trace

LogFormat = Literal["auto", "json", "text"]
REDACTED = "[REDACTED]"
NOISY = ("aiokafka", "httpx", "alembic", "opentelemetry")

_JOB: ContextVar[tuple[str | None, str | None] | None] = ContextVar("headway_job", default=None)
_CREDENTIAL = re.compile(
    r"(?i)(bearer\s+|(?:api[-_]?key|x-api-key|x-goog-api-key|authorization|secret|password|"
    r"token)[\"']?\s*[:=]\s*[\"']?(?:bearer\s+|basic\s+)?|[?&]key=)([^\s\"'&,;}]+)"
    r"|\b(sk-(?:ant-)?[A-Za-z0-9_-]{8,}|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)"
)
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class Redactor:
    """Replaces known secret values and credential-shaped text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        known = {*self._secrets, *(s for s in secrets if s and len(s) >= 4)}
        self._secrets = sorted(known, key=len, reverse=True)  # longest first

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _CREDENTIAL.sub(_mask, text)


def _mask(match: re.Match[str]) -> str:
    if match.group(3) is not None:
        return REDACTED
    return f"{match.group(1)}{REDACTED}"


_ACTIVE = Redactor()  # the process's log redactor (logging itself is process-wide)


@contextlib.contextmanager
def job_context(job_id: str | None, tenant: str | None) -> Iterator[None]:
    """Name the job on every line logged inside the block (this task only)."""
    token = _JOB.set((job_id, tenant))
    try:
        yield
    finally:
        _JOB.reset(token)


def _context_fields() -> dict[str, str]:
    fields: dict[str, str] = {}
    job = _JOB.get()
    if job is not None:
        job_id, tenant = job
        if job_id:
            fields["job_id"] = job_id
        if tenant:
            fields["tenant"] = tenant
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        fields["trace_id"] = format(span.trace_id, "032x")
        fields["span_id"] = format(span.span_id, "016x")
    return fields


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__()
        self.redact = redact or _ACTIVE

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        line: dict[str, Any] = {
            "ts": stamp.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        line.update(_context_fields())
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in line:
                line[name] = self.redact(str(value)) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(line, default=lambda v: self.redact(str(v)), ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redact = redact or _ACTIVE

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _context_fields()
        named = " ".join(f"{k}={fields[k]}" for k in ("tenant", "job_id") if k in fields)
        return self.redact(f"{text} [{named}]" if named else text)


def redact(text: str) -> str:
    """``text`` with the process's known secrets and credential-shaped parts replaced: for
    what leaves the worker besides log lines (result error messages, dead-letter reasons,
    provider error messages and so span events)."""
    return _ACTIVE(text)


def redact_secrets(values: Iterable[str]) -> None:
    """Keep these values (a loaded config's keys and signing secrets) out of every line."""
    _ACTIVE.add(values)


def configure_logging(log_format: LogFormat = "auto", level: str = "INFO") -> None:
    """Install the formatter on the root logger, writing to stderr."""
    chosen = log_format
    if chosen == "auto":
        chosen = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
