"""Per-tenant quotas (``rpm``, ``tpm``, ``max_in_flight``) held across every worker process
that shares the ledger database.

A worker never counts on its own: it *leases* a small slice from the shared state in the
database (atomic conditional updates, :mod:`workers.ledger.quota_rows`) and spends the slice
locally, so a job usually passes without a database round trip and the limits hold no matter
how many replicas run.

- ``rpm`` / ``tpm``: a shared token bucket refilled at ``limit / 60`` per second whose capacity
  is one second of the limit (never a whole minute, which would let two minutes' worth through
  one 60 s window). A worker leases ``slice`` tokens at a time — 0.2 s of the limit, at least
  what the job needs — and keeps what it has not spent for later jobs. In any 60 s window
  the tenant is admitted at most ``limit + capacity + workers × slice`` requests (tokens):
  for ``rpm = 600`` and two workers, 600 + 10 + 2 × 2 = 614 (2.3 % over), which is the
  over-admission bound the docs state and the tests check.
- ``tpm`` reserves the job's estimated tokens (input estimate + ``max_tokens`` or the default
  output allowance) and settles to the reported usage afterwards: unused tokens go back, an
  overrun is charged, so the bucket tracks what providers really counted.
- ``max_in_flight``: a worker holds a *grant* of slots; growing it is atomic against the
  other workers' live grants, so the tenant's running jobs never exceed the limit (no
  over-admission at all). Idle slots beyond one slice are returned as jobs finish; a crashed
  worker's grant stops counting when its lease lapses.

A job that cannot be admitted now learns when to try again (:class:`Wait`); the scheduler
sets the tenant aside until then — it never holds a runner or another tenant's turn.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

from workers.ledger.database.transactions import Transact
from workers.ledger.quota_rows import IN_FLIGHT, Bucket, QuotaLedger, Taken

SLICE_S = 0.2  # a token lease is this many seconds of the tenant's rate
CAPACITY_S = 1.0  # a shared bucket holds this many seconds of the rate
SLOT_RETRY_S = 0.1  # how soon a tenant at max_in_flight looks for slots freed elsewhere

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Wait:
    """Not admitted: try again in ``seconds``; ``pace_s`` is the tenant's time per job at its
    quota (for spreading deferred jobs), ``reason`` names the quota; ``park``: the wait is
    long (a budget period), so the job and the tenant's queued jobs go to the retry topic."""

    seconds: float
    reason: str
    pace_s: float = 0.0
    park: bool = False


def over_admission_bound(limit: int, workers: int) -> int:
    """The most a tenant may be admitted in any 60 s window under a ``limit`` per minute."""
    lease = TokenLease("", "rpm", limit)
    return math.floor(limit + lease.bucket.capacity + workers * lease.slice)


class TokenLease:
    """This worker's share of one tenant's shared rpm or tpm bucket."""

    def __init__(self, tenant: str, resource: str, limit_per_minute: int) -> None:
        rate = limit_per_minute / 60
        self.bucket = Bucket(tenant, resource, rate, max(1.0, rate * CAPACITY_S))
        self.slice = max(1, math.ceil(rate * SLICE_S))
        self.held = 0.0
        self.adjust = 0.0  # settled usage not yet written back (+ unused, − overrun)
        self._empty_until = 0.0  # the shared bucket said "empty until then": don't ask sooner
        self._lock = asyncio.Lock()

    async def take(
        self, amount: float, run: Transact, ledger: QuotaLedger, clock: Clock
    ) -> float | None:
        """Take ``amount``; None when taken, else the seconds until the bucket can give it."""
        if self.held >= amount:
            self.held -= amount
            return None
        async with self._lock:  # one lease at a time per tenant; the others wait for it
            if self.held >= amount:
                self.held -= amount
                return None
            now = clock()
            if now < self._empty_until:
                return self._empty_until - now
            want = max(amount - self.held, self.slice)
            adjust, self.adjust = self.adjust, 0.0
            try:
                taken: Taken = await run(
                    lambda conn: ledger.take(conn, self.bucket, want, now, adjust)
                )
            except BaseException:
                self.adjust += adjust
                raise
            if not taken.ok:
                missing = min(want, self.bucket.capacity) - taken.tokens
                wait: float = max(missing / self.bucket.rate, 0.001)
                self._empty_until = now + wait
                return wait
            self.held += want - amount
            return None

    def give_back(self, amount: float) -> None:
        self.held += amount

    def settle(self, reserved: float, used: float) -> None:
        """Record the reported usage of a job that reserved ``reserved`` tokens."""
        self.adjust += reserved - used
        if reserved > used:
            self._empty_until = 0.0  # the unused tokens may be enough: ask again

    def pending(self) -> float:
        """Tokens to return to the shared bucket on close."""
        return self.held + self.adjust


class SlotGrant:
    """This worker's grant of one tenant's in-flight slots."""

    def __init__(self, tenant: str, limit: int) -> None:
        self.tenant = tenant
        self.limit = limit
        self.bucket = Bucket(tenant, IN_FLIGHT, 0.0, 0.0)
        self.slice = max(1, limit // 20)
        self.granted = 0
        self.used = 0
        self._lock = asyncio.Lock()

    async def acquire(
        self, run: Transact, ledger: QuotaLedger, owner: str, clock: Clock, lease_s: float
    ) -> bool:
        if self.used < self.granted:
            self.used += 1
            return True
        async with self._lock:
            if self.used < self.granted:
                self.used += 1
                return True
            wanted = min(self.limit, self.used + self.slice)
            now = clock()
            self.granted = await run(
                lambda conn: ledger.grow_grant(
                    conn, self.bucket, owner, wanted, self.limit, now, now + lease_s
                )
            )
            if self.used < self.granted:
                self.used += 1
                return True
            return False

    def release(self) -> int | None:
        """One job done; returns the smaller grant to write back when idle slots pile up."""
        self.used -= 1
        if self.granted - self.used > self.slice:
            self.granted = self.used + self.slice
            return self.granted
        return None
