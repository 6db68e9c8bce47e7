"""Every topic name, header name and consumer-group name headway uses — and nowhere else.

Topics are ``<prefix>.<suffix>`` with the prefix from ``HEADWAY_TOPIC_PREFIX`` (CONTRACT §1).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.jobs import Priority

DEFAULT_PREFIX = "headway"
DEFAULT_CONSUMER_GROUP = "headway-workers"

#: Lanes in the order workers serve them: high before normal before low.
LANES: tuple[Priority, ...] = (Priority.HIGH, Priority.NORMAL, Priority.LOW)

HEADER_ERROR = "headway-error"
HEADER_REDIRECTED_FROM = "headway-redirected-from"  # the topic that refused this record for good
HEADER_SOURCE_TOPIC = "headway-source-topic"
HEADER_SOURCE_PARTITION = "headway-source-partition"
HEADER_SOURCE_OFFSET = "headway-source-offset"
#: on a dead letter whose value was cut to fit the topic: the original value's size in bytes
HEADER_TRUNCATED = "headway-truncated"
HEADER_SIGNATURE = "headway-signature"
HEADER_RETRY_COUNT = "headway-retry-count"
HEADER_NOT_BEFORE = "headway-not-before"  # epoch milliseconds a parked job may run from
HEADER_ATTEMPTS = "headway-attempts"  # provider calls a parked job has made so far
#: set by `headway dlq replay`: "<dlq partition>:<dlq offset>"; a failed or rejected job runs again
HEADER_REPLAY = "headway-replay"
HEADER_ONLINE = "headway-online"  # a job the batch lane handed back: run it online
#: W3C trace context (https://www.w3.org/TR/trace-context/): on jobs from the SDK, and on results
# on results: whose, and of which batch (absent: none) — a reader filters without parsing
HEADER_TENANT = "headway-tenant"
HEADER_BATCH = "headway-batch"
HEADER_TRACEPARENT = "traceparent"
HEADER_TRACESTATE = "tracestate"


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names for one prefix."""

    prefix: str = DEFAULT_PREFIX

    def jobs(self, lane: Priority) -> str:
        return f"{self.prefix}.jobs.{lane.value}"

    @property
    def job_lanes(self) -> dict[str, Priority]:
        """Job topic name → its lane."""
        return {self.jobs(lane): lane for lane in LANES}

    @property
    def results(self) -> str:
        return f"{self.prefix}.results"

    @property
    def usage(self) -> str:
        return f"{self.prefix}.usage"

    @property
    def retry(self) -> str:
        return f"{self.prefix}.retry"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def control(self) -> str:
        return f"{self.prefix}.control"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}.alerts"

    def all(self) -> list[str]:
        return [
            *self.job_lanes,
            self.results,
            self.usage,
            self.retry,
            self.dlq,
            self.control,
            self.alerts,
        ]


def result_headers(tenant: str, batch_id: str | None) -> list[tuple[str, bytes]]:
    """The headers a result carries besides its trace context: its tenant and batch."""
    headers = [(HEADER_TENANT, tenant.encode())]
    if batch_id is not None:
        headers.append((HEADER_BATCH, batch_id.encode()))
    return headers
