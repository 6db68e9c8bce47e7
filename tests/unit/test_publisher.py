"""Publishing sees each record through: a transient Kafka failure is sent again until it is
acknowledged; a topic that refuses a record for good sends it to its fallback topic, saying why;
a refused record with no fallback is dropped, and the caller moves on."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import (
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
    TopicAuthorizationFailedError,
)

from broker.errors import TopicMissing
from broker.kafka import refused_for_good
from broker.topics import (
    HEADER_ERROR,
    HEADER_REDIRECTED_FROM,
    HEADER_SOURCE_OFFSET,
    HEADER_TRUNCATED,
    Topics,
)
from workers.settle import publisher as publishing
from workers.settle.publisher import Outgoing, Publisher


class ScriptedBatches:
    """Stands in for RecordBatchSender: each topic answers its appends from a script of outcomes
    (None: acknowledged; an exception: that failure), then acknowledges everything."""

    def __init__(self, script: dict[str, list[BaseException | None]]) -> None:
        self.script = {topic: list(outcomes) for topic, outcomes in script.items()}
        self.appended: dict[str, list[tuple[bytes | None, list[tuple[str, bytes]]]]] = defaultdict(
            list
        )
        self.values: dict[str, list[bytes | None]] = defaultdict(list)

    async def append(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Any = ()
    ) -> asyncio.Future[None]:
        self.appended[topic].append((key, list(headers)))
        self.values[topic].append(value)
        outcomes = self.script.get(topic) or [None]
        outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        if isinstance(outcome, TopicMissing):
            raise outcome  # found out before a batch is even made
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if outcome is None:
            future.set_result(None)
        else:
            future.set_exception(outcome)
        return future


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publishing, "RETRY_S", (0.001, 0.002))


def publisher_on(batches: ScriptedBatches) -> Publisher:
    return Publisher(batches, Topics("hw"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "for_good"),
    [
        (KafkaTimeoutError(), False),  # brokers down: the delivery timed out
        (NotEnoughReplicasError(), False),  # fewer in-sync replicas than min.insync.replicas
        (TopicMissing("t"), True),
        (MessageSizeTooLargeError(), True),
        (TopicAuthorizationFailedError(), True),
        (ValueError("not Kafka's: a bug"), True),
    ],
    ids=["timeout", "too-few-replicas", "missing", "too-large", "not-authorised", "bug"],
)
def test_which_failures_another_try_can_mend(error: BaseException, for_good: bool) -> None:
    assert refused_for_good(error) is for_good


async def test_a_transient_failure_is_sent_again_until_it_is_acknowledged() -> None:
    batches = ScriptedBatches({"hw.results": [KafkaTimeoutError(), NotEnoughReplicasError(), None]})
    await publisher_on(batches).publish([Outgoing("hw.results", b"job-1", b"{}")])
    assert len(batches.appended["hw.results"]) == 3


async def test_only_the_failed_records_are_sent_again() -> None:
    batches = ScriptedBatches({"hw.usage": [KafkaTimeoutError(), None]})
    await publisher_on(batches).publish(
        [Outgoing("hw.results", b"job-1", b"{}"), Outgoing("hw.usage", b"acme", b"{}")]
    )
    assert len(batches.appended["hw.results"]) == 1
    assert len(batches.appended["hw.usage"]) == 2


async def test_a_missing_reply_topic_sends_the_result_to_its_fallback_saying_why() -> None:
    batches = ScriptedBatches({"acme.replies": [TopicMissing("acme.replies")]})
    record = Outgoing("acme.replies", b"job-1", b"{}", [("traceparent", b"00-x")], "hw.results")
    await publisher_on(batches).publish([record])
    [(key, headers)] = batches.appended["hw.results"]
    assert key == b"job-1"
    named = dict(headers)
    assert named[HEADER_REDIRECTED_FROM] == b"acme.replies"
    assert b"does not exist" in named[HEADER_ERROR]
    assert named["traceparent"] == b"00-x"  # the record's own headers travel along


async def test_a_record_too_large_for_its_topic_goes_to_the_fallback() -> None:
    batches = ScriptedBatches({"acme.replies": [MessageSizeTooLargeError()]})
    record = Outgoing("acme.replies", b"job-1", b"{}", (), "hw.results")
    await publisher_on(batches).publish([record])
    assert len(batches.appended["hw.results"]) == 1


async def test_a_refused_record_without_a_fallback_is_dropped_with_an_error_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batches = ScriptedBatches({"hw.usage": [TopicAuthorizationFailedError()]})
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(
            publisher_on(batches).publish([Outgoing("hw.usage", b"acme", b"{}")]), 5
        )
    assert len(batches.appended["hw.usage"]) == 1
    assert "dropped" in caplog.text and "hw.usage" in caplog.text


async def test_a_fallback_that_refuses_too_ends_the_publish() -> None:
    batches = ScriptedBatches(
        {"acme.replies": [TopicMissing("acme.replies")], "hw.results": [TopicMissing("r")]}
    )
    record = Outgoing("acme.replies", b"job-1", b"{}", (), "hw.results")
    await asyncio.wait_for(publisher_on(batches).publish([record]), 5)
    assert len(batches.appended["hw.results"]) == 1


async def test_dead_letters_and_parked_jobs_are_retried_like_results() -> None:
    from aiokafka import ConsumerRecord

    batches = ScriptedBatches({"hw.dlq": [KafkaTimeoutError(), None]})
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        "hw.jobs.normal", 0, 7, 0, 0, b"k", None, None, 1, 0, ()
    )
    await publisher_on(batches).dead_letter(record, "not JSON")
    assert len(batches.appended["hw.dlq"]) == 2


async def test_a_record_too_large_for_the_dead_letter_topic_is_cut_to_fit_saying_so() -> None:
    batches = ScriptedBatches({})
    publisher = Publisher(batches, Topics("hw"), max_record_bytes=1_000_000)  # type: ignore[arg-type]
    huge = ConsumerRecord(
        "hw.jobs.normal",
        0,
        9,
        0,
        0,
        b"k" * 5000,
        b"x" * 3_000_000,
        None,
        5000,
        3_000_000,
        [("h", None)],
    )
    await publisher.dead_letter(huge, "unreadable: value is 3000000 bytes")
    [(key, headers)] = batches.appended["hw.dlq"]
    [value] = batches.values["hw.dlq"]
    named = dict(headers)
    assert named[HEADER_TRUNCATED] == b"3000000"
    assert named[HEADER_SOURCE_OFFSET] == b"9"
    size = len(key or b"") + len(value or b"") + sum(len(n) + len(v or b"") for n, v in headers)
    assert 900_000 < size <= 1_000_000
    assert value == b"x" * len(value or b"")  # the first bytes, unchanged


async def test_a_dead_letter_that_fits_is_not_cut() -> None:
    batches = ScriptedBatches({})
    publisher = Publisher(batches, Topics("hw"), max_record_bytes=1_000_000)  # type: ignore[arg-type]
    record = ConsumerRecord(
        "hw.jobs.normal", 0, 9, 0, 0, b"k", b"x" * 900_000, None, 1, 900_000, []
    )
    await publisher.dead_letter(record, "why")
    assert batches.values["hw.dlq"] == [b"x" * 900_000]
    assert HEADER_TRUNCATED not in dict(batches.appended["hw.dlq"][0][1])


async def test_a_dead_letters_reason_is_redacted() -> None:
    batches = ScriptedBatches({})
    publisher = publisher_on(batches)
    record = ConsumerRecord("hw.jobs.normal", 0, 1, 0, 0, None, b"{}", None, -1, 2, [])
    await publisher.dead_letter(record, "internal_error: boom with api_key=sk-abcdefghijklmnop")
    reason = dict(batches.appended["hw.dlq"][0][1])[HEADER_ERROR].decode()
    assert "sk-abc" not in reason and "[REDACTED]" in reason
