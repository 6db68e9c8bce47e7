"""Intake turns any bytes into a valid job or a clean rejection — never an exception."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from workers.intake.parsing import InvalidJob, Unreadable, ValidJob, parse_job

LIMIT = 1024 * 1024
VALID = {
    "job_id": "j1",
    "tenant": "acme",
    "kind": "chat",
    "route": "summarize",
    "messages": [{"role": "user", "content": "hello"}],
}


def encode(value: object) -> bytes:
    return json.dumps(value).encode()


def test_a_valid_job_is_parsed() -> None:
    outcome = parse_job(encode(VALID), LIMIT)
    assert isinstance(outcome, ValidJob) and outcome.job.job_id == "j1"


def test_bytes_that_are_not_a_json_object_are_unreadable() -> None:
    for value, reason in [
        (b"\x00\xff\xfe", "not UTF-8"),
        (b'{"job_id": "j1", "ten', "not JSON"),
        (b"[1, 2, 3]", "JSON list"),
        (b'"just a string"', "JSON str"),
        (b"", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    ]:
        outcome = parse_job(value, LIMIT)
        assert isinstance(outcome, Unreadable), value[:20]
        assert reason in outcome.reason


def test_a_tombstone_and_an_oversized_value_are_unreadable() -> None:
    assert isinstance(parse_job(None, LIMIT), Unreadable)
    big = parse_job(b"{" + b" " * 2000 + b"}", 1000)
    assert isinstance(big, Unreadable) and "maximum is 1000" in big.reason


def test_nan_and_infinity_are_not_json() -> None:
    outcome = parse_job(b'{"job_id": "j", "max_cost_usd": NaN}', LIMIT)
    assert isinstance(outcome, Unreadable) and "NaN" in outcome.reason


def test_an_invalid_object_keeps_its_identity_for_the_rejected_result() -> None:
    outcome = parse_job(encode({**VALID, "kind": "image"}), LIMIT)
    assert isinstance(outcome, InvalidJob)
    assert (outcome.job_id, outcome.tenant) == ("j1", "acme")
    assert outcome.reason.startswith("kind:")


def test_an_invalid_object_without_a_readable_identity_has_none() -> None:
    outcome = parse_job(encode({"job_id": 5, "tenant": ["x"]}), LIMIT)
    assert isinstance(outcome, InvalidJob)
    assert outcome.job_id is None and outcome.tenant is None


def test_duplicate_keys_are_rejected_by_name() -> None:
    raw = b'{"job_id": "j1", "tenant": "acme", "kind": "chat", "kind": "embedding"}'
    outcome = parse_job(raw, LIMIT)
    assert isinstance(outcome, InvalidJob) and outcome.reason == "kind: duplicate key"


def test_a_lone_surrogate_is_rejected() -> None:
    raw = encode(VALID).replace(b"hello", b"\\ud800")
    outcome = parse_job(raw, LIMIT)
    assert isinstance(outcome, InvalidJob) and "surrogate" in outcome.reason


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_give_an_outcome_not_an_exception(value: bytes) -> None:
    assert isinstance(parse_job(value, LIMIT), ValidJob | InvalidJob | Unreadable)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(sorted([*VALID, "params", "input", "template", "metadata", "x"])),
        json_values,
    )
)
def test_any_json_object_is_valid_or_rejected_with_a_reason(fields: dict[str, object]) -> None:
    outcome = parse_job(encode({**VALID, **fields}), LIMIT)
    assert isinstance(outcome, ValidJob | InvalidJob)
    if isinstance(outcome, InvalidJob):
        assert outcome.reason


def test_a_records_identity_is_read_only_when_every_part_is_well_formed() -> None:
    from workers.intake.parsing import Identity, identity_of

    def of(value: bytes) -> Identity | None:
        return identity_of(value, 10_000)

    assert of(b'{"tenant": "acme", "job_id": "j-1", "batch_id": "b 1"}') == Identity(
        "acme", "j-1", "b 1"
    )
    assert of(b'{"tenant": "acme", "job_id": "j-1"}') == Identity("acme", "j-1", None)
    for value in [
        b'{"tenant": "ACME", "job_id": "j-1"}',  # not a tenant name
        b'{"tenant": "acme", "job_id": "j 1"}',  # not a job id
        b'{"tenant": "acme", "job_id": "j-1", "batch_id": "' + b"x" * 129 + b'"}',
        b'{"tenant": "acme", "job_id": "j-1", "batch_id": "\\ud800"}',  # a lone surrogate
        b'{"tenant": "acme", "job_id": "j-1", "batch_id": "a\\u0000b"}',
        b'{"tenant": "acme", "job_id": "j-1", "batch_id": 7}',
        b'["tenant", "acme"]',
        b"not json",
        b"",
        b'{"tenant": "acme", "job_id": "j-1", "pad": "' + b"x" * 10_000 + b'"}',  # too large
    ]:
        assert of(value) is None, value
