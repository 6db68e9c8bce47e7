"""headway for FastStream applications: typed job publishers and a results subscriber.

    from faststream import FastStream
    from faststream.kafka import KafkaBroker
    from broker.faststream import HeadwayFastStream

    kafka = KafkaBroker("localhost:9092")
    headway = HeadwayFastStream(kafka, Settings().topics, signing_secret=secret)

    @headway.results(group="nightly-pipeline", batch="nightly")
    async def on_result(result: JobResult) -> None:
        ...                                  # committed once this returns; raised: read again

    app = FastStream(kafka)

    @app.after_startup
    async def publish() -> None:
        await headway.submit({"job_id": "doc-1", "tenant": "acme", ...})

A job is validated once and published as headway's own producer SDK does (:mod:`broker.client`):
to its lane's topic, keyed by ``job_id``, with a ``headway-signature`` header when a signing
secret is given. Results are read in the consumer group ``group`` from the earliest offset it
has not committed; a result of another batch or tenant is passed over by its headers, unparsed
(:mod:`broker.subscription`); the offset is committed after the handler returns and the result
is read again when it raises (FastStream's ``NACK_ON_ERROR``). Test an application in memory with
FastStream's ``TestKafkaBroker``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from broker.client import JobLike, encode_job, sign
from broker.subscription import require_tenant, wanted_result
from broker.topics import HEADER_SIGNATURE, Topics
from schemas.jobs import JobRequest, Priority
from schemas.results import JobResult

ResultHandler = Callable[[JobResult], Awaitable[None]]


class HeadwayFastStream:
    """headway's topics on a FastStream ``KafkaBroker``."""

    def __init__(
        self, broker: KafkaBroker, topics: Topics, *, signing_secret: str | None = None
    ) -> None:
        self.broker = broker
        self.topics = topics
        self._signing_secret = signing_secret
        self._lanes = {
            lane: broker.publisher(
                topics.jobs(lane),
                title=f"{topics.jobs(lane)}:JobRequest",
                description=f"{lane.value}-priority headway jobs; key = job_id",
                schema=JobRequest,
            )
            for lane in Priority
        }

    async def submit(self, job: JobLike, priority: Priority | None = None) -> JobRequest:
        """Validate ``job`` and publish it to its lane (``priority``, else the job's own)."""
        request, value = encode_job(job)
        lane = priority or request.priority or Priority.NORMAL
        headers = {}
        if self._signing_secret is not None:
            headers[HEADER_SIGNATURE] = sign(value, self._signing_secret)
        await self._lanes[lane].publish(value, key=request.job_id.encode(), headers=headers)
        return request

    def results(
        self,
        group: str,
        *,
        batch: str | None = None,
        tenant: str | None = None,
        topic: str | None = None,
    ) -> Callable[[ResultHandler], ResultHandler]:
        """Register a handler of the results of ``tenant`` (any, when None) for the consumer
        group ``group``; of its ``batch`` only when given (a batch names its tenant)."""
        require_tenant(batch, tenant)

        def register(handler: ResultHandler) -> ResultHandler:
            async def consume(message: KafkaMessage) -> None:
                result = wanted_result(message.raw_message, batch, tenant)
                if result is not None:
                    await handler(result)

            self.broker.subscriber(
                topic or self.topics.results,
                group_id=group,
                auto_offset_reset="earliest",
                ack_policy=AckPolicy.NACK_ON_ERROR,
                title=f"{topic or self.topics.results}:JobResult ({group})",
            )(consume)
            return handler

        return register
