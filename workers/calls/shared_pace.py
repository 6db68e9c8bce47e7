"""A deployment's ``rpm`` and ``tpm`` held across every worker process that shares the ledger.

Each worker's :class:`~workers.calls.limits.DeploymentLimiter` paces its own calls; alone, N
workers would send N × the declared rate. So before a call, a worker also takes the request
(and its estimated tokens) from the deployment's *shared* buckets in the ledger — the
mechanism of tenant quotas (:class:`~workers.admission.quotas.TokenLease`: a worker leases a
slice, 0.2 s of the rate, and spends it locally; one database round trip per slice).

The shared buckets refill at ``SHARED_MARGIN`` × the declared rate and hold one second of it,
so in any 60 s window a deployment is sent at most ``margin × limit + capacity + workers ×
slice`` requests: for ``rpm = 600`` and three workers 582 + 9.7 + 3 × 2 ≈ 598, under what a
provider counting a sliding minute allows. A worker that dies takes its unspent slice with it
(fewer calls, never more); one that joins leases from the same buckets. The adaptive
concurrency limit stays per worker: it answers a provider's pushback, which every worker sees.

Buckets are keyed by the deployment (``provider:model``) under resources of their own
(``provider_rpm``, ``provider_tpm``), apart from tenants' quotas.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable

from broker.config import DeploymentConfig
from workers.admission.quotas import TokenLease
from workers.ledger.database.transactions import Connection, Transact
from workers.ledger.quota_rows import QuotaLedger

SHARED_MARGIN = 0.97  # of the declared rate: room for the capacity and the workers' slices
MAX_KEY = 64  # the ledger's bucket key column
log = logging.getLogger(__name__)


def bucket_key(deployment: DeploymentConfig) -> str:
    """The deployment's key as a bucket key (hashed when it is longer than the column)."""
    key = deployment.key
    if len(key) <= MAX_KEY:
        return key
    return f"sha256:{hashlib.sha256(key.encode()).hexdigest()[:40]}"


class SharedPace:
    """This worker's leases of every deployment's shared rpm and tpm buckets."""

    def __init__(
        self, run: Transact, ledger: QuotaLedger, clock: Callable[[], float] = time.time
    ) -> None:
        self._run = run
        self._ledger = ledger
        self._clock = clock  # wall clock: the buckets' time is shared by every worker
        self._rpm: dict[str, TokenLease] = {}
        self._tpm: dict[str, TokenLease] = {}

    async def take(self, deployment: DeploymentConfig, tokens: int) -> float | None:
        """Take one request and ``tokens`` for a call to ``deployment``: None when taken
        (or nothing is declared), else the seconds until the shared buckets can give them."""
        rpm = self._lease(self._rpm, deployment, "provider_rpm", deployment.rpm)
        tpm = self._lease(self._tpm, deployment, "provider_tpm", deployment.tpm)
        if rpm is not None:
            wait = await rpm.take(1, self._run, self._ledger, self._clock)
            if wait is not None:
                return wait
        if tpm is not None and tokens > 0:
            wait = await tpm.take(tokens, self._run, self._ledger, self._clock)
            if wait is not None:
                if rpm is not None:
                    rpm.give_back(1)
                return wait
        return None

    def give_back(self, deployment: DeploymentConfig, tokens: int) -> None:
        """A call taken for did not happen."""
        if (rpm := self._rpm.get(deployment.key)) is not None:
            rpm.give_back(1)
        if (tpm := self._tpm.get(deployment.key)) is not None and tokens > 0:
            tpm.give_back(tokens)

    def settle(self, deployment: DeploymentConfig, reserved: int, used: int | None) -> None:
        """A call ended having used ``used`` tokens (None: not reported, as reserved)."""
        tpm = self._tpm.get(deployment.key)
        if tpm is not None and reserved > 0:
            tpm.settle(reserved, reserved if used is None else used)

    async def close(self) -> None:
        """Return unspent slices and settled differences to the shared buckets."""
        leases = [lease for lease in [*self._rpm.values(), *self._tpm.values()] if lease.pending()]
        if not leases:
            return
        now = self._clock()

        async def work(conn: Connection) -> None:
            for lease in leases:
                await self._ledger.adjust(conn, lease.bucket, lease.pending(), now)

        try:
            await self._run(work)
        except Exception as error:  # the slices lapse into the buckets' refill anyway
            log.warning("unspent provider pace was not returned: %s", error)

    @staticmethod
    def _lease(
        leases: dict[str, TokenLease],
        deployment: DeploymentConfig,
        resource: str,
        limit: int | None,
    ) -> TokenLease | None:
        if limit is None:
            return None
        lease = leases.get(deployment.key)
        if lease is None:
            shared = max(1, math.floor(limit * SHARED_MARGIN))
            lease = leases[deployment.key] = TokenLease(bucket_key(deployment), resource, shared)
        return lease
