"""A worker process: fetch → lane buffer → N concurrent runners → commit what is done.

Fetching and backpressure are :mod:`workers.intake.fetching`; one job's path is
:mod:`workers.pipeline.job_pipeline`.

Concurrency (``HEADWAY_CONCURRENCY``) is independent of the partition count: one consumer
feeds a bounded buffer that N runners drain. Offsets are committed every
``commit_interval_ms`` up to each partition's first unfinished offset. On revocation, queued
jobs of the revoked partitions are dropped (they will be redelivered), in-flight ones get
``revoke_grace_s`` to finish, and what is done is committed. The fetch loop never waits on a job,
so long provider calls never miss ``max.poll.interval.ms``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from types import TracebackType

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError, KafkaError

from broker.config import HeadwayConfig
from broker.errors import LedgerRefused, LedgerUnavailable
from broker.kafka import watch_producer
from broker.settings import Settings
from schemas.results import ErrorCode
from workers.admission.quotas import Wait
from workers.intake.fetching import Fetcher
from workers.intake.parsing import job_id_of, tenant_of
from workers.intake.replay_holds import ReplayHolds
from workers.intake.scheduler import QueuedJob
from workers.intake.spill import Spill
from workers.pipeline.parts import Telemetry
from workers.runtime.gc_tuning import tuned_gc
from workers.runtime.probes import ProbeServer
from workers.runtime.readiness import Readiness, watch_kafka, watch_ledger
from workers.runtime.wiring import (
    SHUTDOWN_KAFKA_S,
    Parts,
    Seams,
    buffers,
    open_intake,
    spill_for,
    wire,
)
from workers.telemetry.logs import job_context
from workers.telemetry.metrics import Metrics
from workers.telemetry.tracing import Tracing

log = logging.getLogger(__name__)

POISON_ATTEMPTS = 3
SHUTDOWN_LEDGER_S = 5.0  # longest wait for each ledger write while draining
CANCEL_AGAIN_S = 1.0  # a task still running this long after its cancel is cancelled again
KAFKA_PROBE_S = 5.0  # how often the cluster's metadata is asked for (readiness)
REVOKE_STORE_S = 5.0  # longest wait, on revocation, to spill what the revoked partitions queued


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._worker.on_assigned(set(assigned))


class Worker:
    """``async with Worker(settings, config) as worker: await worker.run(stop_event)``.

    The worker owns the lifecycle — runners, the commit and lease loops, rebalances, the
    drain; every part it runs is built by :mod:`workers.runtime.wiring`."""

    def __init__(
        self,
        settings: Settings,
        config: HeadwayConfig,
        *,
        tracing: Tracing | None = None,
        seams: Seams | None = None,
    ) -> None:
        """``tracing``: its owner (the CLI) closes it (None: off); ``seams``: a test's
        replacements."""
        self.settings = settings
        self.tracing = tracing if tracing is not None else Tracing.off()
        self.config = config
        self.topics = settings.topics
        self._lanes = self.topics.job_lanes
        self._seams = seams if seams is not None else Seams()
        self._buffers = built = buffers(settings, config)
        self.scheduler, self.parked, self.tracker = built.scheduler, built.parked, built.tracker
        self.in_flight: collections.Counter[TopicPartition] = collections.Counter()
        self.processed = 0
        self.revocations = 0  # rebalances that took partitions away from this worker
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._runners: list[asyncio.Task[None]] = []
        self._job_finished = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self.fetcher: Fetcher | None = None
        self.producer: AIOKafkaProducer | None = None
        self.readiness = Readiness()
        self.metrics = Metrics(config.tenants, config.routes)
        self.probes: ProbeServer | None = None
        self.spill: Spill | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Worker:
        try:
            await self._open()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _open(self) -> None:
        settings = self.settings
        self._stack.callback(self.metrics.close)
        parts = await wire(
            self._stack,
            settings,
            self.config,
            readiness=self.readiness,
            telemetry=Telemetry(self.metrics, self.tracing),
            on_free=self.scheduler.resume,
            seams=self._seams,
        )
        self.producer, self.ledger, self.publisher = parts.producer, parts.ledger, parts.publisher
        self.pipeline = parts.pipeline
        replays = parts.pipeline.replays
        self.holds = ReplayHolds(replays.genuine if replays else None, self.scheduler)
        self.cancellations, self.admission = parts.pipeline.cancellations, parts.pipeline.admission
        self.spill = spill_for(settings, self.config, self._buffers, parts.ledger)
        self._register_gauges(parts)
        await self.cancellations.refresh()  # known cancels apply before the first fetch
        consumer, self.fetcher = await open_intake(
            self._stack, settings, self.config, self._buffers, _Rebalance(self), self.spill
        )
        self._consumer = consumer
        self._stack.enter_context(tuned_gc(settings.gc_threshold))  # restored after the drain
        self._stack.push_async_callback(self._drain)
        if settings.http_port is not None:
            probes = ProbeServer(self.readiness, settings.http_port, metrics=self.metrics)
            self.probes = await self._stack.enter_async_context(probes)
        # with pipeline_runners > 0, jobs are claimed ahead and published after while
        # `concurrency` others hold the provider-call slots (workers/calls/slots.py)
        runners = settings.concurrency + settings.runners_ahead
        self._runners = [asyncio.create_task(self._run_jobs()) for _ in range(runners)]
        self._tasks = [
            asyncio.create_task(self.fetcher.run()),
            asyncio.create_task(self._commit_loop()),
            asyncio.create_task(self._lease_loop()),
            asyncio.create_task(self.fetcher.release_parked_forever()),
            asyncio.create_task(self.cancellations.follow(parts.control)),
            asyncio.create_task(self.cancellations.refresh_forever()),
            asyncio.create_task(
                watch_ledger(self.readiness, self.ledger.probe, settings.ledger_probe_s)
            ),
            asyncio.create_task(watch_kafka(self.readiness, consumer.topics, KAFKA_PROBE_S)),
            asyncio.create_task(watch_producer(parts.producer)),
        ]
        if any(route.cache is not None for route in self.config.routes.values()):
            cache = settings.cache
            prune = self.pipeline.cache.prune_forever(cache.prune_s, cache.max_entries)
            self._tasks.append(asyncio.create_task(prune))
        if self.pipeline.batch_lane is not None:
            self._tasks.append(asyncio.create_task(self.pipeline.batch_lane.run_forever()))
        self._tasks += [asyncio.create_task(run()) for run in parts.background]
        if self.spill is not None:
            self._tasks.append(asyncio.create_task(self.spill.refill_forever()))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def _register_gauges(self, parts: Parts) -> None:
        idle = {lane.value: 0.0 for lane in self._lanes.values()}  # before the consumer starts
        self.metrics.worker_gauges(
            in_flight=lambda: sum(self.in_flight.values()),
            buffered=self.scheduler.depths,
            lag=lambda: self.fetcher.lag() if self.fetcher is not None else idle,
            circuits=parts.pipeline.executor.board.snapshot,
            ready=lambda: self.readiness.ready,
            spilled=self.spill.waiting if self.spill is not None else None,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set (or a background task dies)."""
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([stopper, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _drain(self) -> None:
        """Stop fetching, let in-flight jobs finish, commit, give up leases."""
        self.readiness.draining = True
        await stop_tasks(self._tasks)
        dropped = self.scheduler.clear() + self.parked.clear() + self.holds.clear()
        await self._wait_until(
            lambda: not any(self.in_flight.values()), self.settings.shutdown_grace_s
        )
        await stop_tasks(self._runners)
        await self.publisher.drain()
        if self.spill is not None:  # bounded: rows left held are taken again when leases lapse
            with contextlib.suppress(Exception):
                async with asyncio.timeout(SHUTDOWN_LEDGER_S):
                    await self.spill.close()
        try:  # bounded: a group stuck rebalancing must not hold up the exit
            async with asyncio.timeout(SHUTDOWN_KAFKA_S):
                await self._commit()
        except TimeoutError:
            log.warning("final offset commit timed out; uncommitted jobs will be redelivered")
        # bounded: a pool left short by cancelled runners must not hold up the exit (leases
        # and grants lapse by themselves)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(SHUTDOWN_LEDGER_S):
                await self.ledger.release_all()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(SHUTDOWN_LEDGER_S):
                await self.admission.close()
        pace = self.pipeline.executor.pace
        if pace is not None:  # unspent slices of the providers' shared pace
            with contextlib.suppress(Exception):
                async with asyncio.timeout(SHUTDOWN_LEDGER_S):
                    await pace.close()
        log.info(
            "worker drained: %d processed, %d queued left for redelivery", self.processed, dropped
        )

    # -- running jobs -------------------------------------------------------------------------

    async def _run_jobs(self) -> None:
        while True:
            await self.readiness.ledger_up()  # no new work while the database is unreachable
            job = await self.scheduler.get()
            if self.holds.hold(job):  # its replay header is checked first, off the runners
                continue
            self.in_flight[job.tp] += 1
            if job.record.timestamp and job.tp.topic != self.topics.retry:
                waited = time.time() - job.record.timestamp / 1000
                self.metrics.job_started(job.lane.value, waited)
            with job_context(job_id_of(job.intake), tenant_of(job.intake) or None):
                try:
                    with self.tracing.job(job.record):
                        finished = await self._run_one(job)
                    if finished:
                        self._finished(job)
                except Exception:
                    # even the dead letter failed (Kafka unreachable?): keep the offset
                    # unfinished so the job is redelivered, and keep this runner alive
                    log.exception("job at %s:%d left unfinished", job.tp, job.record.offset)
                    if job.spill_id is not None and self.spill is not None:
                        self.spill.give_back(job)  # taken again, by this worker or another
                finally:
                    self.in_flight[job.tp] -= 1
                    self._job_finished.set()

    def _finished(self, job: QueuedJob) -> None:
        if job.spill_id is None:
            self.tracker.done(job.tp, job.record.offset)
        elif self.spill is not None:
            self.spill.finished(job)

    async def _run_one(self, job: QueuedJob) -> bool:
        """Run (or park) one job from the buffer; True once its offset may be committed."""
        if job.park_s is not None:  # a throttled tenant's job: wait on the retry topic
            await self.pipeline.parking.park_unstarted(job.record, job.park_s)
            return True
        wait = await self._process(job)
        if wait is not None:  # not admitted yet: back in its queue, tenant set aside
            self.metrics.set_aside(job.tenant, wait.reason)
            self.scheduler.set_aside(job, wait)
            return False
        self.processed += 1
        return True

    async def _wait_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Wait (woken by each finished job) until ``condition`` holds or time runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not condition():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._job_finished.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._job_finished.wait()
        return True

    async def _process(self, job: QueuedJob) -> Wait | None:
        """Run the pipeline; a job that keeps crashing headway's own code is dead-lettered."""
        error: Exception | None = None
        failures = 0
        while failures < POISON_ATTEMPTS:
            try:
                return await self.pipeline.handle(job.record, job.intake, job.replay)
            except LedgerRefused as refused:  # this job's values: no retry can store them
                reason = f"invalid_request: {refused}"
                await self.pipeline.poison.poisoned(
                    job.record, job.intake, reason, ErrorCode.INVALID_REQUEST
                )
                return None
            except LedgerUnavailable:  # the database, not the job: wait for it, do not count
                log.warning("job at %s:%d waits for the ledger", job.tp, job.record.offset)
                await self.readiness.ledger_up()
                await asyncio.sleep(self.settings.ledger_probe_s)
            except Exception as caught:  # a bug or an unforeseen input: never kill the runner
                error, failures = caught, failures + 1
                log.exception("job at %s:%d raised", job.tp, job.record.offset)
        # the error's type only: its text may hold what the job made headway read (the log
        # line above has it all, for the operator)
        await self.pipeline.poison.poisoned(
            job.record, job.intake, f"internal_error: {type(error).__name__}"
        )
        return None

    # -- commits, leases, rebalances ----------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.commit_interval_ms / 1000)
            if self.readiness.ledger_is_up:  # not while what finished cannot be told apart
                await self._commit()

    async def _commit(self, partitions: set[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        chosen = assigned if partitions is None else partitions & assigned
        offsets = self.tracker.to_commit(chosen)
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
            self.tracker.committed(offsets)
        except (CommitFailedError, KafkaError) as error:
            log.warning("offset commit failed (will retry): %s", error)

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                await self.ledger.renew_leases()
                await self.admission.renew()
                if self.spill is not None:
                    await self.spill.renew()
            except Exception as error:
                log.warning("lease renewal failed: %s", error)

    def assignment(self) -> set[TopicPartition]:
        """The partitions this worker's consumer holds now."""
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.tracker.assign(assigned)
        if self.fetcher is not None:
            self.fetcher.on_assigned(assigned)
        log.info("assigned %d partitions", len(assigned))

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        queued = self.scheduler.drop(revoked) + self.holds.drop(revoked)
        dropped = len(queued) + self.parked.drop(revoked)
        if self.fetcher is not None:
            self.fetcher.forget(revoked)
        if self.spill is not None:
            await self.spill.hand_over(queued, revoked, REVOKE_STORE_S)
        await self._wait_until(
            lambda: not any(self.in_flight[tp] for tp in revoked), self.settings.revoke_grace_s
        )
        await self._commit(revoked)
        self.tracker.forget(revoked)
        if revoked:
            self.revocations += 1
            log.info("revoked %d partitions (%d queued jobs dropped)", len(revoked), dropped)


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended. A task still running a moment
    after its cancel is cancelled again: code that swallows a cancel (Python 3.11's
    ``asyncio.wait_for`` does when its inner call ends at that instant) must not hold up a
    drain for ever."""
    for task in tasks:
        task.cancel()
    pending = {task for task in tasks if not task.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN_S)
        for task in pending:
            log.warning("task %s is still running after its cancel; cancelling it again", task)
            task.cancel()
    for task in tasks:  # what they raised was theirs to log; retrieved, so asyncio is quiet
        if not task.cancelled():
            task.exception()
