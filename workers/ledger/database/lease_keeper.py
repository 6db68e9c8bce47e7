"""Work done under a named lease (``ledger_leases``) that never outlives the lease.

:meth:`LeaseKeeper.hold` takes the lease and runs the work while renewing it every third of
its length. The work runs under a deadline a margin short of the lease's last known expiry,
moved on by each renewal: when renewals stop succeeding (the database is slow or gone, or
another worker took the lease after all), the work is cancelled before the lease can lapse —
so no other worker takes the lease while this one is still at the work. Deadlines are on the
event loop's monotonic clock; the lease's expiry is written from the injected wall ``clock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum

from workers.ledger.database.transactions import Connection, Transact
from workers.ledger.retention.steps import release_lease, take_lease

log = logging.getLogger(__name__)


class Tenure(StrEnum):
    NOT_HELD = "not_held"  # another worker holds the lease: the work did not run
    DONE = "done"  # the work ran to its end under the lease
    STOPPED = "stopped"  # the lease could not be renewed: the work was cancelled in time


class LeaseKeeper:
    def __init__(
        self,
        run: Transact,
        name: str,
        owner: str,
        clock: Callable[[], float],
        lease_s: float,
    ) -> None:
        self._run = run
        self._name = name
        self._owner = owner
        self._clock = clock
        self._lease_s = lease_s
        self._margin_s = lease_s / 4  # stop this long before the lease would lapse

    async def _take(self) -> bool:
        async def take(conn: Connection) -> bool:
            now = self._clock()
            return await take_lease(conn, self._name, self._owner, now, now + self._lease_s)

        return await self._run(take)

    async def hold(self, work: Callable[[], Awaitable[None]]) -> Tenure:
        loop = asyncio.get_running_loop()
        started = loop.time()
        if not await self._take():
            return Tenure.NOT_HELD
        deadline = asyncio.timeout_at(started + self._lease_s - self._margin_s)
        try:
            async with deadline:
                renewing = asyncio.create_task(self._renew(deadline))
                try:
                    await work()
                finally:
                    renewing.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await renewing
            return Tenure.DONE
        except TimeoutError:
            if not deadline.expired():
                raise  # the work's own
            log.warning(
                "lease %s not renewed: its work stopped before the lease could lapse", self._name
            )
            return Tenure.STOPPED
        finally:
            try:
                await self._run(lambda conn: release_lease(conn, self._name, self._owner))
            except Exception as error:  # it lapses on its own
                log.warning("lease %s not released: %s", self._name, error)

    async def _renew(self, deadline: asyncio.Timeout) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._lease_s / 3)
            started = loop.time()
            try:
                held = await self._take()
            except Exception as error:  # the deadline stands; try again
                log.warning("lease %s not renewed: %s", self._name, error)
                continue
            if not held:
                log.warning("lease %s was taken by another worker", self._name)
                deadline.reschedule(loop.time())  # stop at once
                return
            deadline.reschedule(started + self._lease_s - self._margin_s)
