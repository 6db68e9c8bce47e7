"""Jobs whose ``headway-replay`` header is being checked wait here, off the runners.

Whether a replay header is genuine may take a read of the dead-letter topic (or an ask for its
end offsets): a runner that took such a job hands it over here and takes the next one at once.
The job keeps counting towards its lane's bounds while held; once its check has answered, it
goes back to its place in the buffer with the answer (``QueuedJob.replay``), and the runner
that takes it then runs it without checking again. A forged header costs its own job a moment,
never another tenant's runner (:mod:`workers.pipeline.replays`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import ConsumerRecord, TopicPartition

from broker.headers import has_header
from broker.topics import HEADER_REPLAY
from workers.intake.parsing import ValidJob
from workers.intake.scheduler import LaneScheduler, QueuedJob

log = logging.getLogger(__name__)

Genuine = Callable[[ConsumerRecord[bytes, bytes]], Awaitable[bool]]


class ReplayHolds:
    def __init__(self, genuine: Genuine | None, scheduler: LaneScheduler) -> None:
        """``genuine``: the check (None: a replay header is never honoured, nothing to hold)."""
        self._genuine = genuine
        self._scheduler = scheduler
        self._held: dict[asyncio.Task[bool], QueuedJob] = {}

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, job: QueuedJob) -> bool:
        """Take ``job`` off the runner that took it while its replay header is checked (True),
        or leave it to run now (False: no header, already checked, or not a job to run)."""
        if self._genuine is None or job.replay is not None or job.park_s is not None:
            return False
        if not isinstance(job.intake, ValidJob):  # ends on the poison path, unchecked
            return False
        if not has_header(job.record.headers, HEADER_REPLAY):
            return False
        self._scheduler.hold(job)
        task = asyncio.create_task(_verdict(job, self._genuine))
        self._held[task] = job
        task.add_done_callback(self._checked)
        return True

    def _checked(self, task: asyncio.Task[bool]) -> None:
        job = self._held.pop(task, None)
        if job is None or task.cancelled():  # given up meanwhile
            return
        job.replay = task.result()
        self._scheduler.back(job)

    def drop(self, partitions: Iterable[TopicPartition]) -> list[QueuedJob]:
        """Give up the held jobs of revoked partitions (they will be redelivered)."""
        gone = set(partitions)
        return self._give_up(lambda job: job.tp in gone)

    def clear(self) -> int:
        """Give up every held job (the worker drains)."""
        return len(self._give_up(lambda job: True))

    def _give_up(self, which: Callable[[QueuedJob], bool]) -> list[QueuedJob]:
        dropped: list[QueuedJob] = []
        for task, job in list(self._held.items()):
            if which(job):
                del self._held[task]
                task.cancel()
                self._scheduler.forget_held(job)
                dropped.append(job)
        return dropped


async def _verdict(job: QueuedJob, genuine: Genuine) -> bool:
    try:
        return await genuine(job.record)
    except Exception:  # a bug: the header is not honoured, the job still runs
        log.exception("checking the replay header of %s:%d failed", job.tp, job.record.offset)
        return False
