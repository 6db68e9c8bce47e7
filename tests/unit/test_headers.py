"""Header values may be null or any bytes, and names may repeat: every reader takes them."""

from __future__ import annotations

import json

from aiokafka import ConsumerRecord

from broker.dlq import DeadLetter, replay_headers
from broker.headers import has_header, header_bytes, header_int, header_text, header_texts
from broker.topics import (
    HEADER_ATTEMPTS,
    HEADER_ERROR,
    HEADER_NOT_BEFORE,
    HEADER_RETRY_COUNT,
    HEADER_SOURCE_TOPIC,
    HEADER_TRACEPARENT,
)
from broker.tracing import context_from
from workers.batch_lane.items import saved_headers
from workers.intake.parked import not_before_s
from workers.pipeline.parking import Parked

HOSTILE: list[tuple[str, bytes | None]] = [
    ("a", None),
    ("a", b"\xff\xfefirst"),
    ("b", b""),
    ("a", None),
    ("n", b"12"),
    ("n", b"not a number"),
    ("big", b"9" * 400),
]


def record(headers: list[tuple[str, bytes | None]]) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t", 0, 7, 0, 0, None, b"{}", None, -1, 2, headers)


def test_the_last_non_null_value_wins_and_null_reads_as_absent() -> None:
    assert header_bytes(HOSTILE, "a") == b"\xff\xfefirst"
    assert header_text(HOSTILE, "a") == "\ufffd\ufffdfirst"
    assert header_text(HOSTILE, "missing", "dflt") == "dflt"
    assert header_texts(HOSTILE, "a") == ["\ufffd\ufffdfirst"]
    assert header_text(None, "a") == ""
    assert has_header([("x", None)], "x") and not has_header(None, "x")


def test_integers_that_are_not_integers_read_as_the_default() -> None:
    assert header_int(HOSTILE, "n", 5) == 5  # the last one is not a number
    assert header_int(HOSTILE, "big", 3) == 3  # 400 digits: not parsed at all
    assert header_int([("n", b" 42 ")], "n") == 42
    assert header_int([("n", None)], "n", 9) == 9


def test_null_trace_headers_are_no_trace() -> None:
    assert context_from([(HEADER_TRACEPARENT, None)]) is None
    assert context_from([(HEADER_TRACEPARENT, b"\xff\x00garbage")]) is None


def test_parking_headers_that_are_null_or_nonsense_count_as_zero() -> None:
    parked = Parked.of(
        record([(HEADER_RETRY_COUNT, None), (HEADER_ATTEMPTS, b"-5"), (HEADER_NOT_BEFORE, None)])
    )
    assert (parked.parks, parked.attempts) == (0, 0)
    assert not_before_s([(HEADER_NOT_BEFORE, None)]) == 0.0
    assert not_before_s([(HEADER_NOT_BEFORE, b"1500")]) == 1.5


def test_a_dead_letter_with_null_headers_is_listed_and_replayed() -> None:
    letter = DeadLetter.of(
        record([(HEADER_SOURCE_TOPIC, None), (HEADER_ERROR, b"why"), ("x", None)])
    )
    assert letter.sources == [] and letter.error == "why"
    assert json.loads(json.dumps(letter.as_json()))["source_topic"] is None
    assert ("x", None) in replay_headers(letter)


def test_the_batch_lane_keeps_null_header_values_across_its_hand_over() -> None:
    saved = json.dumps({"topic": "t", "headers": [["x", None], ["y", "AQI="]]})
    assert saved_headers(saved) == [("x", None), ("y", b"\x01\x02")]
