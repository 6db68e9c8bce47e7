"""Admission: may this tenant's job start now? In-flight slot, rpm, tpm, then budget.

``admit`` returns a :class:`Ticket` (started; ``release`` it when the job ends), a
:class:`~workers.admission.quotas.Wait` (over a quota: the scheduler sets the tenant aside until
then) or an :class:`~workers.admission.budgets.OverBudget`. Jobs under none of these limits
never get here (:meth:`Admission.limits`), so unlimited traffic pays nothing for them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from broker.config import RouteConfig, TenantConfig
from schemas.jobs import JobRequest
from workers.admission.budgets import Budgets, OverBudget
from workers.admission.quotas import SLOT_RETRY_S, Clock, SlotGrant, TokenLease, Wait
from workers.calls import tokens
from workers.calls.tokens import BilledInput
from workers.ledger.database.transactions import Connection, Transact
from workers.ledger.quota_rows import Hold, QuotaLedger

log = logging.getLogger(__name__)


def limited(tenant: TenantConfig) -> bool:
    """Whether the tenant has a quota or a budget of its own."""
    return (
        tenant.rpm is not None
        or tenant.tpm is not None
        or tenant.max_in_flight is not None
        or tenant.budget_usd is not None
    )


def job_tokens(job: JobRequest, billed: BilledInput) -> int:
    """What a job reserves of its tenant's tpm: its billed input plus its output allowance."""
    return billed.tokens + tokens.output_allowance(job)


@dataclass(slots=True)
class Ticket:
    tenant: str
    slot: SlotGrant | None = None
    rpm: TokenLease | None = None
    tpm: TokenLease | None = None
    tpm_reserved: int = 0
    hold: Hold | None = None


class Admission:
    def __init__(
        self,
        run: Transact,
        budgets: Budgets,
        owner: str,
        lease_s: float,
        *,
        clock: Clock = time.time,
        on_free: Callable[[str], None] | None = None,
        account: Callable[[str], str] = str,
    ) -> None:
        """``account``: whose quotas and budget a tenant's jobs count against
        (``HeadwayConfig.account``; by default each tenant its own)."""
        self._account = account
        self._run = run
        self.budgets = budgets
        self._owner = owner
        self._lease_s = lease_s
        self._clock = clock
        self._on_free = on_free
        self._ledger = QuotaLedger()
        self._rpm: dict[str, TokenLease] = {}
        self._tpm: dict[str, TokenLease] = {}
        self._slots: dict[str, SlotGrant] = {}

    def limits(self, job: JobRequest, tenant: TenantConfig) -> bool:
        """Whether the job is under a quota or a budget (its tenant's, team's or batch's)."""
        return limited(tenant) or self.budgets.applies(job, tenant)

    async def admit(
        self,
        job: JobRequest,
        tenant: TenantConfig,
        route: RouteConfig,
        billed: BilledInput,
    ) -> Ticket | Wait | OverBudget:
        account = self._account(job.tenant)
        ticket = Ticket(account)
        refused: Wait | OverBudget | None
        try:
            refused = await self._quotas(ticket, job, tenant, billed)
            if refused is None and self.budgets.applies(job, tenant):
                held = await self.budgets.reserve(job, tenant, route, billed, account)
                if isinstance(held, OverBudget | Wait):
                    refused = held
                else:
                    ticket.hold = held
        except BaseException:  # the ledger failed midway: hand back what was taken
            with contextlib.suppress(Exception):
                await self.release(ticket, None, started=False)
            raise
        if refused is not None:
            await self.release(ticket, None, started=False)
            return refused
        return ticket

    async def _quotas(
        self,
        ticket: Ticket,
        job: JobRequest,
        tenant: TenantConfig,
        billed: BilledInput,
    ) -> Wait | None:
        if tenant.max_in_flight is not None:
            grant = self._slots.get(ticket.tenant)
            if grant is None:
                grant = self._slots[ticket.tenant] = SlotGrant(ticket.tenant, tenant.max_in_flight)
            if not await grant.acquire(
                self._run, self._ledger, self._owner, self._clock, self._lease_s
            ):
                return Wait(SLOT_RETRY_S, "max_in_flight", SLOT_RETRY_S)
            ticket.slot = grant
        if tenant.rpm is not None:
            lease = self._lease(self._rpm, ticket.tenant, "rpm", tenant.rpm)
            wait = await lease.take(1, self._run, self._ledger, self._clock)
            if wait is not None:
                return Wait(wait, "rpm", 60 / tenant.rpm)
            ticket.rpm = lease
        if tenant.tpm is not None:
            amount = job_tokens(job, billed)
            lease = self._lease(self._tpm, ticket.tenant, "tpm", tenant.tpm)
            wait = await lease.take(amount, self._run, self._ledger, self._clock)
            if wait is not None:
                return Wait(wait, "tpm", amount * 60 / tenant.tpm)
            ticket.tpm, ticket.tpm_reserved = lease, amount
        return None

    @staticmethod
    def _lease(leases: dict[str, TokenLease], tenant: str, resource: str, limit: int) -> TokenLease:
        lease = leases.get(tenant)  # the config, and so the limit, is fixed for the worker's life
        if lease is None:
            lease = leases[tenant] = TokenLease(tenant, resource, limit)
        return lease

    async def release(self, ticket: Ticket, used_tokens: int | None, *, started: bool) -> None:
        """The job has ended (``started``) or was not admitted after all: return what it
        holds; ``used_tokens`` settles its tpm reservation (None: nothing was reported)."""
        if ticket.tpm is not None:
            if started:
                used = ticket.tpm_reserved if used_tokens is None else used_tokens
                ticket.tpm.settle(ticket.tpm_reserved, used)
            else:
                ticket.tpm.give_back(ticket.tpm_reserved)
        if ticket.rpm is not None and not started:
            ticket.rpm.give_back(1)
        if ticket.hold is not None:  # not settled by a stored finish (parked, not started)
            await self.budgets.drop(ticket.hold)
        if ticket.slot is not None:
            shrunk = ticket.slot.release()
            if shrunk is not None:
                await self._shrink(ticket.slot, shrunk)
            if self._on_free is not None:
                self._on_free(ticket.tenant)

    async def _shrink(self, grant: SlotGrant, amount: int) -> None:
        try:
            await self._run(
                lambda conn: self._ledger.shrink_grant(conn, grant.tenant, self._owner, amount)
            )
        except Exception as error:  # the grant lapses with this worker's lease otherwise
            log.warning("could not return idle in-flight slots of %s: %s", grant.tenant, error)

    async def renew(self) -> None:
        now = self._clock()
        await self._run(lambda conn: self._ledger.renew(conn, self._owner, now + self._lease_s))

    async def close(self) -> None:
        """Return unspent tokens and settled differences; give up grants and holds."""
        now = self._clock()
        leases = [*self._rpm.values(), *self._tpm.values()]

        async def work(conn: Connection) -> None:
            for lease in leases:
                if lease.pending():
                    await self._ledger.adjust(conn, lease.bucket, lease.pending(), now)
            await self._ledger.release_all(conn, self._owner)

        await self._run(work)
