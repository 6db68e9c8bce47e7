"""Creating a topic: the admin client answers per-topic errors in its response, not by raising."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.admin import NewTopic
from aiokafka.errors import InvalidPartitionsError

from broker.admin import _created, wanted_topics
from broker.settings import Settings


@dataclass
class Response:
    topic_errors: list[tuple[Any, ...]]


@dataclass
class AnsweringAdmin:
    code: int
    asked: list[str] = field(default_factory=list)

    async def create_topics(self, topics: list[NewTopic]) -> Response:
        self.asked += [topic.name for topic in topics]
        return Response([(topic.name, self.code, "the broker's words") for topic in topics])


TOPIC = NewTopic("t.jobs.normal", 6, 1)


async def test_a_topic_the_broker_created_is_reported_created() -> None:
    admin = AnsweringAdmin(code=0)
    assert await _created(admin, TOPIC) is True  # type: ignore[arg-type]
    assert admin.asked == ["t.jobs.normal"]


async def test_a_topic_that_already_exists_is_not_reported_created() -> None:
    assert await _created(AnsweringAdmin(code=36), TOPIC) is False  # type: ignore[arg-type]


async def test_any_other_answer_is_raised_with_the_topic_and_the_brokers_words() -> None:
    words = re.escape("t.jobs.normal: the broker's words")
    with pytest.raises(InvalidPartitionsError, match=words):
        await _created(AnsweringAdmin(code=37), TOPIC)  # type: ignore[arg-type]


def test_topics_create_makes_every_topic_the_workers_write() -> None:
    """The alerts topic too: on a cluster that creates no topic on a producer's first write
    (Apache Kafka as run in production), alerts were never published and so never POSTed."""
    settings = Settings(topic_prefix="hw")
    wanted = {plan.name for plan in wanted_topics(settings)}
    assert wanted == set(settings.topics.all())
