"""Published budget alerts delivered to tenants' webhooks: each tenant apart, one worker at a
time, never past that worker's lease.

A round reads, tenant by tenant, the alerts on the topic (``published_at`` set) that its webhook
has not had (``delivered_at`` null): the tenant's own and its batches'. Each tenant is delivered
to in a task of its own — at most ``concurrency`` at once — oldest alert first, each POST with
its own timeout and retries (``posting.py``); a slow or failing receiver holds up its own
tenant only. A tenant whose receiver is not reached stops for the round and backs off (doubling
from ``backoff_s`` up to ``max_backoff_s``) while the others go on. An alert is delivered
at least once, as the same ``webhook-id``: the ``alert_webhooks`` lease is held, and renewed,
while a round runs, and a round that cannot renew it is cancelled before the lease could lapse
(``workers/ledger/database/lease_keeper.py``), so no other worker POSTs an alert while this one may.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update

from broker.settings import WebhookSettings
from workers.admission.webhooks.posting import Delivery, Webhooks
from workers.ledger.database.lease_keeper import LeaseKeeper, Tenure
from workers.ledger.database.models import BudgetAlertRow
from workers.ledger.database.transactions import Connection, Transact

log = logging.getLogger(__name__)

LEASE = "alert_webhooks"
PER_TENANT = 50  # alerts read for a tenant per round
EVERY_S = 5.0


@dataclass(slots=True)
class _Backoff:
    failures: int
    until: float  # the clock's time before which the tenant is not tried


class AlertDeliveries:
    def __init__(
        self,
        run: Transact,
        webhooks: Webhooks,
        owner: str,
        clock: Callable[[], float],
        settings: WebhookSettings,
    ) -> None:
        self._run = run
        self._webhooks = webhooks
        self._clock = clock
        self._settings = settings
        self._lease = LeaseKeeper(run, LEASE, owner, clock, settings.lease_s)
        self._backoff: dict[str, _Backoff] = {}
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Alerts were just published: deliver them without waiting for the next round."""
        self._wake.set()

    async def run_forever(self, every_s: float = EVERY_S) -> None:
        while True:
            self._wake.clear()  # a wake from now on is for alerts this round may miss
            try:
                await self.deliver_pending()
            except Exception as error:  # the ledger's outage is reported elsewhere
                log.warning("alert webhooks not delivered: %s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), every_s)

    async def deliver_pending(self) -> Tenure:
        """One round, if this worker gets the lease."""
        now = self._clock()
        due = [t for t in self._webhooks.tenants if self._due(t, now)]
        if not due:
            return Tenure.DONE
        return await self._lease.hold(functools.partial(self._round, due))

    def _due(self, tenant: str, now: float) -> bool:
        backoff = self._backoff.get(tenant)
        return backoff is None or backoff.until <= now

    async def _round(self, tenants: list[str]) -> None:
        room = asyncio.Semaphore(self._settings.concurrency)
        async with asyncio.TaskGroup() as group:
            for tenant in tenants:
                group.create_task(self._tenant(tenant, room))

    async def _tenant(self, tenant: str, room: asyncio.Semaphore) -> None:
        async with room:
            try:
                rows = await self._run(functools.partial(undelivered, tenant=tenant))
                for event_id, payload in rows:
                    delivery = await self._webhooks.deliver(tenant, event_id, payload.encode())
                    if not delivery.settled:
                        self._back_off(tenant, delivery)
                        return
                    mark = functools.partial(delivered, event=event_id, now=self._clock())
                    await self._run(mark)
                self._backoff.pop(tenant, None)
            except Exception as error:  # one tenant's trouble is not the others'
                log.warning("alert webhooks of %s not delivered: %s", tenant, error)

    def _back_off(self, tenant: str, delivery: Delivery) -> None:
        failures = self._backoff[tenant].failures + 1 if tenant in self._backoff else 1
        wait = min(self._settings.max_backoff_s, self._settings.backoff_s * 2 ** (failures - 1))
        self._backoff[tenant] = _Backoff(failures, self._clock() + wait)
        log.info(
            "alert webhook of %s %s (%s): next try in %g s",
            tenant, delivery.outcome.value, delivery.detail, wait,
        )  # fmt: skip


async def undelivered(conn: Connection, tenant: str) -> list[tuple[str, str]]:
    """A tenant's published alerts its webhook has not had (its own and its batches'),
    oldest first: (event id, payload)."""
    rows = await conn.execute(
        select(BudgetAlertRow.event_id, BudgetAlertRow.payload)
        .where(
            or_(
                and_(BudgetAlertRow.scope == "tenant", BudgetAlertRow.scope_key == tenant),
                and_(
                    BudgetAlertRow.scope == "batch",
                    # a batch alert's scope key is ``tenant/batch_id``
                    BudgetAlertRow.scope_key.startswith(f"{tenant}/", autoescape=True),
                ),
            ),
            BudgetAlertRow.published_at.is_not(None),
            BudgetAlertRow.delivered_at.is_(None),
        )
        .order_by(BudgetAlertRow.created_at)
        .limit(PER_TENANT)
    )
    return [(event_id, payload) for event_id, payload in rows]


async def delivered(conn: Connection, event: str, now: float) -> None:
    await conn.execute(
        update(BudgetAlertRow).where(BudgetAlertRow.event_id == event).values(delivered_at=now)
    )
