"""A result's size is what Kafka sees: UTF-8 bytes, not characters."""

from __future__ import annotations

from workers.settle.settlement import _utf8_size_above


def test_a_result_is_measured_in_utf8_bytes_not_characters() -> None:
    assert _utf8_size_above("é" * 600, 1000) == 1200  # 600 characters, 1,200 bytes
    assert _utf8_size_above("e" * 600, 1000) is None
    assert _utf8_size_above("e" * 200, 1000) is None  # short enough not to be encoded
