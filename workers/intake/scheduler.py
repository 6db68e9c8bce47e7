"""The bounded buffer between the Kafka fetch loop and the job runners: lanes, tenants, aging.

- **Lanes**: runners take high before normal before low. Each lane is bounded by count and
  bytes on its own, so a full low lane never holds up high-priority work; what a full lane
  cannot hold is spilled to the ledger (:mod:`workers.intake.spill`, by
  :meth:`LaneScheduler.over_share`) or, without a spill, its topic's partitions pause.
- **Tenants**: inside a lane, each tenant has its own queue and runners serve them by deficit
  round robin with the tenants' ``weight`` — a tenant with a deep backlog and a tenant with a
  few jobs take turns, in proportion to their weights, instead of first come first served.
- **Aging**: with ``aging_s`` set, a lane whose oldest job has waited ``aging_s`` is served as
  if it were one lane higher (two lanes higher after twice that), so low-priority work still
  progresses under a sustained stream of high-priority work.
- **Set aside**: a tenant over one of its quotas is set aside until it may run again
  (:meth:`LaneScheduler.set_aside`); its queued jobs keep their places, and runners serve the
  other tenants meanwhile. When a set-aside tenant's jobs crowd a lane past half its bound,
  the newest of them beyond :data:`PARK_KEEP` are handed out to be parked (``park_s`` set):
  the worker parks them on the retry topic spread over the tenant's pace — so a throttled
  backlog never
  fills the buffer and pauses partitions that other tenants' jobs arrive on.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiokafka import ConsumerRecord, TopicPartition

from broker.topics import LANES
from schemas.jobs import Priority
from workers.admission.quotas import Wait
from workers.intake.parsing import Identity, Intake

RECORD_OVERHEAD_BYTES = 200  # what a queued record costs beyond its value, roughly


@dataclass(slots=True)
class QueuedJob:
    record: ConsumerRecord[bytes, bytes]
    lane: Priority
    tp: TopicPartition
    size: int  # of its lane's bytes: its value, its parsed job (estimated) + RECORD_OVERHEAD_BYTES
    tenant: str = ""
    intake: Intake | None = None  # parsed once, in the fetch loop
    enqueued_at: float = 0.0
    park_s: float | None = None  # set: park the job for this long instead of running it
    spill_id: int | None = None  # set: taken from the ledger's spilled jobs, not a buffer's
    waited_s: float = 0.0  # how long it waited before it reached this buffer (spilled)
    identity: Identity | None = None  # read without a full parse, to be spilled
    replay: bool | None = None  # its headway-replay header is genuine (None: not checked)


PARK_KEEP = 64  # jobs of a set-aside tenant kept per lane under pressure (≤ a quarter)


class FairQueue:
    """One lane: a FIFO per tenant, served by deficit round robin with the tenants' weights."""

    def __init__(self, weight: Callable[[str], float]) -> None:
        self._weight = weight
        self._queues: dict[str, deque[QueuedJob]] = {}
        self._turns: deque[str] = deque()  # tenants with queued jobs, in serving order
        self._credit: dict[str, float] = {}
        self.count = 0
        self.bytes = 0
        self.weights = 0.0  # the sum of the weights of the tenants with queued jobs
        # taken but held off the runners (a replay header being checked): they count towards
        # the lane's bounds, so what the fetcher may add stays bounded
        self.held = 0
        self.held_bytes = 0

    @property
    def load(self) -> tuple[int, int]:
        """Jobs and bytes the lane holds: queued and held."""
        return self.count + self.held, self.bytes + self.held_bytes

    def put(self, job: QueuedJob) -> None:
        queue = self._queues.get(job.tenant)
        if queue is None:
            queue = self._queues[job.tenant] = deque()
            self._turns.append(job.tenant)
            self._credit[job.tenant] = 0.0
            self.weights += self._weight(job.tenant)
        queue.append(job)
        self.count += 1
        self.bytes += job.size

    def push_front(self, job: QueuedJob) -> None:
        """Give a job back (a runner was cancelled holding it): it keeps its place."""
        queue = self._queues.get(job.tenant)
        if queue is None:
            queue = self._queues[job.tenant] = deque()
            self._turns.appendleft(job.tenant)
            self._credit[job.tenant] = 1.0
            self.weights += self._weight(job.tenant)
        queue.appendleft(job)
        self.count += 1
        self.bytes += job.size

    def pop(self, blocked: Callable[[str], bool] | None = None) -> QueuedJob | None:
        skipped = 0
        while self._turns:
            tenant = self._turns[0]
            if blocked is not None and blocked(tenant):
                skipped += 1
                if skipped >= len(self._turns):
                    return None  # every tenant with jobs is set aside
                self._turns.rotate(-1)
                continue
            skipped = 0
            if self._credit[tenant] < 1.0:
                self._credit[tenant] += self._weight(tenant)
                if self._credit[tenant] < 1.0:  # a weight below 1 waits for more turns
                    self._turns.rotate(-1)
                    continue
            queue = self._queues[tenant]
            job = queue.popleft()
            self._credit[tenant] -= 1.0
            self.count -= 1
            self.bytes -= job.size
            if not queue:
                self._forget(tenant)
            elif self._credit[tenant] < 1.0:
                self._turns.rotate(-1)  # its turn is used up
            return job
        return None

    def ready(self, blocked: Callable[[str], bool]) -> bool:
        """Whether a tenant that is not set aside has jobs here."""
        return any(not blocked(tenant) for tenant in self._turns)

    def depth(self, tenant: str) -> int:
        queue = self._queues.get(tenant)
        return len(queue) if queue else 0

    def pop_newest(self, tenant: str) -> QueuedJob:
        queue = self._queues[tenant]
        job = queue.pop()
        self.count -= 1
        self.bytes -= job.size
        if not queue:
            self._forget(tenant)
        return job

    def share(self, tenant: str, bound: int, elsewhere: float = 0.0) -> float:
        """The tenant's share of ``bound`` jobs, by weight, among the tenants queued here
        (itself included) — or, when more, the weight of tenants whose jobs wait
        ``elsewhere`` (in the ledger) for this lane."""
        weight = self._weight(tenant)
        others = self.weights - (weight if tenant in self._queues else 0.0)
        return bound * weight / max(max(others, elsewhere) + weight, 1e-9)

    def _forget(self, tenant: str) -> None:
        self.weights = max(self.weights - self._weight(tenant), 0.0)
        del self._queues[tenant]
        del self._credit[tenant]
        self._turns.remove(tenant)

    def oldest(self) -> float | None:
        """When the longest-waiting job of the lane was queued."""
        heads = [queue[0].enqueued_at for queue in self._queues.values()]
        return min(heads) if heads else None

    def drop(self, gone: set[TopicPartition]) -> list[QueuedJob]:
        dropped: list[QueuedJob] = []
        for tenant in list(self._queues):
            queue = self._queues[tenant]
            kept = deque(job for job in queue if job.tp not in gone)
            dropped.extend(job for job in queue if job.tp in gone)
            self.count -= len(queue) - len(kept)
            self.bytes -= sum(job.size for job in queue) - sum(job.size for job in kept)
            if kept:
                self._queues[tenant] = kept
            else:
                self._forget(tenant)
        return dropped

    def clear(self) -> int:
        dropped = self.count
        self._queues.clear()
        self._turns.clear()
        self._credit.clear()
        self.count = self.bytes = 0
        self.weights = 0.0
        return dropped


class LaneScheduler:
    def __init__(
        self,
        max_jobs_per_lane: int,
        max_bytes_per_lane: int,
        *,
        weight: Callable[[str], float] = lambda tenant: 1.0,
        aging_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lanes: dict[Priority, FairQueue] = {lane: FairQueue(weight) for lane in LANES}
        self._max_jobs = max_jobs_per_lane
        self._max_bytes = max_bytes_per_lane
        self._aging_s = aging_s
        self._clock = clock
        self._getters: deque[asyncio.Future[QueuedJob]] = deque()
        self._aside: dict[str, float] = {}  # tenant -> clock() until which it is set aside
        self._pace: dict[str, float] = {}
        self._horizon: dict[str, float] = {}  # where the tenant's next parked job goes
        self._park_all: set[str] = set()

    def __len__(self) -> int:
        return sum(lane.count for lane in self._lanes.values())

    def depths(self) -> dict[str, float]:
        """Jobs queued per lane (for metrics)."""
        return {lane.value: queue.count for lane, queue in self._lanes.items()}

    def full(self, lane: Priority) -> bool:
        count, size = self._lanes[lane].load
        return count >= self._max_jobs or size >= self._max_bytes

    def overfull(self, lane: Priority) -> bool:
        """Twice the bound: what tenants under their shares may fill a full lane to while
        the others are spilled."""
        count, size = self._lanes[lane].load
        return count >= 2 * self._max_jobs or size >= 2 * self._max_bytes

    def has_room(self, lane: Priority) -> bool:
        """Below half of both bounds: a paused lane may resume."""
        count, size = self._lanes[lane].load
        return count <= self._max_jobs // 2 and size <= self._max_bytes // 2

    def over_share(self, lane: Priority, tenant: str, elsewhere: float = 0.0) -> bool:
        """``tenant`` holds its weighted share of the lane's bound or more, and the lane is
        full — or, with ``elsewhere`` (the weight of tenants whose jobs of this lane wait in
        the ledger), whether or not it is full: a job of it fetched now waits in the ledger
        rather than here, so the buffer keeps room for those tenants' turns."""
        if not elsewhere and not self.full(lane):
            return False
        queue = self._lanes[lane]
        return queue.depth(tenant) >= queue.share(tenant, self._max_jobs, elsewhere)

    def bound(self, up_to: int | None = None) -> int:
        """How many jobs a lane holds when full (or ``up_to``, when fewer)."""
        return self._max_jobs if up_to is None else min(up_to, self._max_jobs)

    def room(self, lane: Priority, up_to: int | None = None) -> int:
        """Jobs the lane can take before it is full (or holds ``up_to``)."""
        count, size = self._lanes[lane].load
        if size >= self._max_bytes:
            return 0
        return max(self.bound(up_to) - count, 0)

    def put(self, job: QueuedJob) -> None:
        job.enqueued_at = self._clock() - job.waited_s
        if self._aside and self._is_aside(job.tenant):
            self._lanes[job.lane].put(job)
            return
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(job)  # queues are empty whenever a runner waits
                return
        self._lanes[job.lane].put(job)

    # -- jobs held off the runners ---------------------------------------------------------------

    def hold(self, job: QueuedJob) -> None:
        """A runner took ``job`` and gives it back to wait off the runners: it still counts
        towards its lane's bounds until :meth:`back` (or :meth:`forget_held`)."""
        queue = self._lanes[job.lane]
        queue.held += 1
        queue.held_bytes += job.size

    def back(self, job: QueuedJob) -> None:
        """A held job may run: it takes its place again, ahead of its tenant's queue."""
        self.forget_held(job)
        self._lanes[job.lane].push_front(job)
        self._wake()

    def forget_held(self, job: QueuedJob) -> None:
        """A held job is gone (its partition revoked, the worker draining)."""
        queue = self._lanes[job.lane]
        queue.held -= 1
        queue.held_bytes -= job.size

    # -- tenants set aside --------------------------------------------------------------------

    def set_aside(self, job: QueuedJob, wait: Wait) -> None:
        """``job``'s tenant may not run now: give the job back and set the tenant aside."""
        now = self._clock()
        until = now + wait.seconds
        self._aside[job.tenant] = max(self._aside.get(job.tenant, 0.0), until)
        self._pace[job.tenant] = wait.pace_s
        if wait.park:
            self._park_all.add(job.tenant)
        self._lanes[job.lane].push_front(job)

    def resume(self, tenant: str) -> None:
        """The tenant may run again (a slot of it was freed here)."""
        if tenant in self._aside:
            self._end_aside(tenant)
            self._wake()

    def _is_aside(self, tenant: str) -> bool:
        until = self._aside.get(tenant)
        if until is None:
            return False
        if until > self._clock():
            return True
        self._end_aside(tenant)
        return False

    def _end_aside(self, tenant: str) -> None:
        del self._aside[tenant]
        self._park_all.discard(tenant)

    def _wake(self) -> None:
        """Hand queued jobs that may run now to waiting runners."""
        while self._getters:
            job = self._pop()
            if job is None:
                return
            getter = self._getters.popleft()
            if getter.done():
                self._lanes[job.lane].push_front(job)
            else:
                getter.set_result(job)

    def _to_park(self) -> QueuedJob | None:
        """The newest job of a set-aside tenant crowding a lane, to be parked."""
        now = self._clock()
        for tenant, until in self._aside.items():
            if until <= now:
                continue
            keep = 0 if tenant in self._park_all else min(PARK_KEEP, self._max_jobs // 4)
            for lane in LANES:
                queue = self._lanes[lane]
                crowded = tenant in self._park_all or not self.has_room(lane)
                if crowded and queue.depth(tenant) > keep:
                    job = queue.pop_newest(tenant)
                    pace = self._pace.get(tenant, 0.0)
                    start = max(self._horizon.get(tenant, 0.0), until + keep * pace)
                    self._horizon[tenant] = start + pace
                    job.park_s = max(start - now, 0.0)
                    return job
        return None

    def _pop(self) -> QueuedJob | None:
        lane = self._next_lane()
        if lane is None:
            return None
        return self._lanes[lane].pop(self._is_aside if self._aside else None)

    def _next_lane(self) -> Priority | None:
        """The highest lane with jobs — unless a lower one has waited long enough to rank
        above it (aging)."""
        if self._aside:
            waiting = [lane for lane in LANES if self._lanes[lane].ready(self._is_aside)]
        else:
            waiting = [lane for lane in LANES if self._lanes[lane].count]
        if not waiting:
            return None
        if self._aging_s is None or len(waiting) == 1:
            return waiting[0]
        now = self._clock()
        best, best_rank = waiting[0], float(LANES.index(waiting[0]))
        for lane in waiting[1:]:
            oldest = self._lanes[lane].oldest()
            waited = 0.0 if oldest is None else now - oldest
            rank = LANES.index(lane) - waited // self._aging_s
            if rank < best_rank:
                best, best_rank = lane, rank
        return best

    async def get(self) -> QueuedJob:
        """The next job to run (or, with ``park_s`` set, to park)."""
        while True:
            job = (self._to_park() if self._aside else None) or self._pop()
            if job is not None:
                return job
            getter: asyncio.Future[QueuedJob] = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await asyncio.wait([getter], timeout=self._until_next_resume())
            except asyncio.CancelledError:
                if getter.done() and not getter.cancelled():
                    self._lanes[getter.result().lane].push_front(getter.result())
                getter.cancel()
                raise
            if getter.done():
                return getter.result()
            getter.cancel()  # a set-aside tenant's time has come: look again

    def _until_next_resume(self) -> float | None:
        if not self._aside:
            return None
        return max(min(self._aside.values()) - self._clock(), 0.001)

    def drop(self, partitions: Iterable[TopicPartition]) -> list[QueuedJob]:
        """Take out the queued (not started) jobs of these partitions: unless they are
        spilled, they will be redelivered."""
        gone = set(partitions)
        return [job for queue in self._lanes.values() for job in queue.drop(gone)]

    def clear(self) -> int:
        return sum(queue.clear() for queue in self._lanes.values())
