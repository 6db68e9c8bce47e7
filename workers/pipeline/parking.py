"""Parking: a job whose wait is too long to sleep on goes to the retry topic with the time
it may run again, holding no slot and blocking no partition meanwhile.

A job parks when its calls must wait out a long Retry-After or every circuit of its route is
open (:meth:`Parking.park`, after the call was tried), or when its tenant is over a quota or
its budget before it starts (:meth:`Parking.park_unstarted`). Its record carries its park and
attempt
counts across parks (:class:`Parked`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from aiokafka import ConsumerRecord

from broker.headers import header_int
from broker.settings import RetrySettings
from broker.topics import HEADER_ATTEMPTS, HEADER_RETRY_COUNT
from schemas.jobs import JobRequest
from workers.ledger.writer import LedgerWriter
from workers.providers.requests import Execution
from workers.settle.publisher import Publisher
from workers.settle.settlement import with_ledger
from workers.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

PARK_MAX_S = 300.0  # longest park of a job whose calls keep failing (without a Retry-After)


@dataclass(frozen=True, slots=True)
class Parked:
    """What a record says of earlier parks of its job (nothing for a first run)."""

    record: ConsumerRecord[bytes, bytes]
    parks: int = 0
    attempts: int = 0

    @classmethod
    def of(cls, record: ConsumerRecord[bytes, bytes]) -> Parked:
        headers = record.headers
        return cls(
            record,
            max(0, header_int(headers, HEADER_RETRY_COUNT)),
            max(0, header_int(headers, HEADER_ATTEMPTS)),
        )


class Parking:
    def __init__(
        self,
        publisher: Publisher,
        ledger: LedgerWriter,
        metrics: Metrics,
        retry: RetrySettings,
    ) -> None:
        self._publisher = publisher
        self._ledger = ledger
        self._metrics = metrics
        self._park_after_s = retry.park_after_s

    async def park(self, job: JobRequest, parked: Parked, execution: Execution) -> None:
        """Put the job on the retry topic to run again after its wait, and let its lease go:
        it holds no slot and blocks no partition meanwhile."""
        assert execution.park_s is not None
        # each park of the same job waits twice as long (an outage gets room to pass), up to
        # PARK_MAX_S unless the provider itself asked for longer
        backoff = self._park_after_s * 2**parked.parks
        wait = max(execution.park_s, min(backoff, PARK_MAX_S))
        not_before = time.time() + wait
        attempts = parked.attempts + execution.attempts
        await self._publisher.park(parked.record, not_before, parked.parks + 1, attempts)
        self._metrics.parked("provider")
        await with_ledger(lambda: self._ledger.release((job.tenant, job.job_id)))
        log.info(
            "parked %s/%s for %.1fs (park %d): %s",
            job.tenant,
            job.job_id,
            wait,
            parked.parks + 1,
            execution.error,
        )

    async def park_unstarted(self, record: ConsumerRecord[bytes, bytes], seconds: float) -> None:
        """Park a job that has not started (its tenant is over a quota or its budget) on the
        retry topic for ``seconds``; it keeps its park and attempt counts."""
        parked = Parked.of(record)
        not_before = time.time() + seconds
        await self._publisher.park(record, not_before, parked.parks, parked.attempts)
        self._metrics.parked("quota")
