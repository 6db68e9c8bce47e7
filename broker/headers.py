"""Reading record headers as Kafka really delivers them.

Any client can write a record: a header's value may be null or any bytes, and a name may
repeat. Everything headway reads from a header goes through these functions, which never
raise: an absent or null value reads as None (or the default), undecodable bytes are
replaced, and the last occurrence of a repeated name wins (what headway appended last).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

#: Headers as aiokafka hands them over: a name and a value that may be null.
RecordHeaders = Iterable[tuple[str, bytes | None]] | None


def header_bytes(headers: RecordHeaders, name: str) -> bytes | None:
    """The last non-null value of ``name``, or None."""
    found: bytes | None = None
    for key, value in headers or ():
        if key == name and isinstance(value, bytes | bytearray):
            found = bytes(value)
    return found


def header_text(headers: RecordHeaders, name: str, default: str = "") -> str:
    """The last non-null value of ``name`` as text (invalid UTF-8 replaced), or ``default``."""
    value = header_bytes(headers, name)
    return default if value is None else value.decode("utf-8", "replace")


def header_texts(headers: RecordHeaders, name: str) -> list[str]:
    """Every non-null value of ``name`` as text, first to last."""
    return [
        bytes(value).decode("utf-8", "replace")
        for key, value in headers or ()
        if key == name and isinstance(value, bytes | bytearray)
    ]


def header_int(headers: RecordHeaders, name: str, default: int = 0) -> int:
    """The last value of ``name`` as a decimal integer, or ``default`` when it is not one."""
    value = header_bytes(headers, name)
    if value is None or len(value) > 20:
        return default
    try:
        return int(value)
    except ValueError:
        return default


def has_header(headers: RecordHeaders, name: str) -> bool:
    """Whether ``name`` is present at all (null value included)."""
    return any(key == name for key, _ in headers or ())


def stored_headers(headers: RecordHeaders) -> list[list[Any]]:
    """Headers as JSON can hold them, to store a record and send it again later: pairs of name
    and base64 value, a null value kept null (:func:`restored_headers` undoes it)."""
    return [
        [name, None if value is None else base64.b64encode(value).decode("ascii")]
        for name, value in headers or ()
    ]


def restored_headers(stored: Iterable[list[Any]]) -> list[tuple[str, bytes | None]]:
    return [(name, None if raw is None else base64.b64decode(raw)) for name, raw in stored]
