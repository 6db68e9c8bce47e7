"""Shared quota and budget state: every statement here is atomic across worker processes.

- **Token buckets** (``rpm``, ``tpm``): one conditional ``UPDATE`` refills the bucket to now
  and takes ``want`` tokens only if they are there — no read-then-write window for another
  worker to slip through. On PostgreSQL a concurrent taker waits for the row lock and then
  re-evaluates the condition against the committed row.
- **In-flight grants**: a worker grows its grant of slots while holding the tenant's bucket row
  lock, against the sum of the other workers' live grants; a grant its worker stopped renewing
  stops counting, so a crashed worker's slots come back by themselves.
- **Budgets**: a job's maximum cost is held against the period's spend plus the live holds of
  other jobs, under the budget row's lock; its actual cost is added in the transaction that
  stores its usage events (:meth:`BudgetLedger.settle`), so the budget's spend is the sum of
  the usage events by construction.

Times are the workers' wall clocks (seconds since the epoch), as for job leases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, case, delete, func, literal, or_, select, update

from workers.ledger.batch_lane_rows import BATCH_OWNER
from workers.ledger.database.models import BudgetHoldRow, BudgetRow, QuotaBucketRow, QuotaGrantRow
from workers.ledger.database.statements import dialect_insert
from workers.ledger.database.transactions import Connection

IN_FLIGHT = "in_flight"


def _least(a: ColumnElement[float] | Any, b: ColumnElement[float] | Any) -> ColumnElement[float]:
    return case((a < b, a), else_=b)


def _greatest(a: ColumnElement[float] | Any, b: ColumnElement[float] | Any) -> ColumnElement[float]:
    return case((a > b, a), else_=b)


@dataclass(frozen=True, slots=True)
class Bucket:
    """A bucket's parameters (from the config, not stored): refill rate and capacity."""

    tenant: str
    resource: str
    rate: float  # tokens per second
    capacity: float


@dataclass(frozen=True, slots=True)
class Taken:
    """``want`` tokens taken (``ok``), or how many there are now (to compute the wait)."""

    ok: bool
    tokens: float


class QuotaLedger:
    """Stateless SQL over ``quota_buckets`` and ``quota_grants``."""

    @staticmethod
    async def _ensure(conn: Connection, bucket: Bucket, now: float) -> None:
        insert = dialect_insert(conn)(QuotaBucketRow).values(
            tenant=bucket.tenant, resource=bucket.resource, tokens=bucket.capacity, updated_at=now
        )
        await conn.execute(insert.on_conflict_do_nothing())

    @staticmethod
    def _refilled(bucket: Bucket, now: float) -> ColumnElement[float]:
        elapsed = _greatest(literal(now) - QuotaBucketRow.updated_at, literal(0.0))
        return _least(
            QuotaBucketRow.tokens + elapsed * literal(bucket.rate), literal(bucket.capacity)
        )

    async def take(
        self, conn: Connection, bucket: Bucket, want: float, now: float, adjust: float = 0.0
    ) -> Taken:
        """Apply ``adjust`` (settled usage: + unused, − overrun), then take ``want`` tokens if
        the bucket holds them (or is full, for a request larger than the whole bucket)."""
        await self._ensure(conn, bucket, now)
        if adjust:
            await self._adjust(conn, bucket, adjust, now)
        where = self._where(bucket)
        stamp = _greatest(QuotaBucketRow.updated_at, literal(now))
        refilled = self._refilled(bucket, now)
        needed = min(want, bucket.capacity)
        taken = await conn.execute(
            update(QuotaBucketRow)
            .where(*where, refilled >= needed)
            .values(tokens=refilled - want, updated_at=stamp)
            .returning(QuotaBucketRow.tokens)
        )
        if taken.scalar_one_or_none() is not None:
            return Taken(True, 0.0)
        tokens = (await conn.execute(select(refilled).where(*where))).scalar_one()
        return Taken(False, float(tokens))

    async def adjust(self, conn: Connection, bucket: Bucket, amount: float, now: float) -> None:
        """Give tokens back (``amount`` > 0) or charge an overrun (< 0)."""
        await self._ensure(conn, bucket, now)
        await self._adjust(conn, bucket, amount, now)

    async def _adjust(self, conn: Connection, bucket: Bucket, amount: float, now: float) -> None:
        adjusted = _least(self._refilled(bucket, now) + amount, literal(bucket.capacity))
        stamp = _greatest(QuotaBucketRow.updated_at, literal(now))
        await conn.execute(
            update(QuotaBucketRow)
            .where(*self._where(bucket))
            .values(tokens=adjusted, updated_at=stamp)
        )

    @staticmethod
    def _where(bucket: Bucket) -> tuple[ColumnElement[bool], ...]:
        return (
            QuotaBucketRow.tenant == bucket.tenant,
            QuotaBucketRow.resource == bucket.resource,
        )

    async def grow_grant(
        self,
        conn: Connection,
        bucket: Bucket,
        owner: str,
        wanted: int,
        limit: int,
        now: float,
        expires_at: float,
    ) -> int:
        """Raise ``owner``'s grant towards ``wanted`` slots, keeping every live grant's sum
        within ``limit``; returns the grant now held."""
        await self._ensure(conn, bucket, now)
        await conn.execute(  # the lock that serialises growing grants of this tenant
            update(QuotaBucketRow)
            .where(QuotaBucketRow.tenant == bucket.tenant, QuotaBucketRow.resource == IN_FLIGHT)
            .values(updated_at=now)
        )
        others = (
            await conn.execute(
                select(func.coalesce(func.sum(QuotaGrantRow.amount), 0)).where(
                    QuotaGrantRow.tenant == bucket.tenant,
                    QuotaGrantRow.resource == IN_FLIGHT,
                    QuotaGrantRow.owner != owner,
                    QuotaGrantRow.expires_at > now,
                )
            )
        ).scalar_one()
        granted = max(0, min(wanted, limit - int(others)))
        insert = dialect_insert(conn)(QuotaGrantRow).values(
            tenant=bucket.tenant,
            resource=IN_FLIGHT,
            owner=owner,
            amount=granted,
            expires_at=expires_at,
        )
        await conn.execute(
            insert.on_conflict_do_update(
                index_elements=["tenant", "resource", "owner"],
                set_={"amount": granted, "expires_at": expires_at},
            )
        )
        return granted

    @staticmethod
    async def shrink_grant(conn: Connection, tenant: str, owner: str, amount: int) -> None:
        await conn.execute(
            update(QuotaGrantRow)
            .where(
                QuotaGrantRow.tenant == tenant,
                QuotaGrantRow.resource == IN_FLIGHT,
                QuotaGrantRow.owner == owner,
            )
            .values(amount=amount)
        )

    @staticmethod
    async def renew(conn: Connection, owner: str, expires_at: float) -> None:
        """Extend this worker's grants and budget holds (with its job leases)."""
        await conn.execute(
            update(QuotaGrantRow).where(QuotaGrantRow.owner == owner).values(expires_at=expires_at)
        )
        await conn.execute(
            update(BudgetHoldRow).where(BudgetHoldRow.owner == owner).values(expires_at=expires_at)
        )

    @staticmethod
    async def release_all(conn: Connection, owner: str) -> None:
        await conn.execute(delete(QuotaGrantRow).where(QuotaGrantRow.owner == owner))
        await conn.execute(delete(BudgetHoldRow).where(BudgetHoldRow.owner == owner))


@dataclass(frozen=True, slots=True)
class Hold:
    """A job's reserved maximum cost, held in each of its budgets: ``periods`` name them as
    ``<account>/<period>`` (:func:`account_period`) — its tenant's first, then its team's and
    its batch's when it has them."""

    tenant: str
    job_id: str
    periods: tuple[str, ...]
    amount_nusd: int

    @property
    def key(self) -> str:
        """The periods as one text, as a finish and a handed-over job carry them."""
        return PERIODS_SEPARATOR.join(self.periods)


#: between a hold's periods in its text: no account or period holds a control character
PERIODS_SEPARATOR = "\n"


def periods_of(key: str) -> tuple[str, ...]:
    """A hold's periods from its text (:attr:`Hold.key`; one period from before scopes)."""
    return tuple(key.split(PERIODS_SEPARATOR))


def account_period(period: str, tenant: str) -> tuple[str, str]:
    """(account, budget period) of a hold's ``account/period``; an unqualified period is the
    tenant's own account's. A batch's account may hold '/': the period never does."""
    account, slash, bare = period.rpartition("/")
    return (account, bare) if slash else (tenant, period)


#: the period of a budget that never resets (a batch's cap)
TOTAL = "total"
BATCH_ACCOUNT = "batch:"


def team_account(team: str) -> str:
    return f"team:{team}"


def batch_account(tenant: str, batch_id: str) -> str:
    """The account of a tenant's batch's budget (a tenant name holds no '/' nor ':')."""
    return f"{BATCH_ACCOUNT}{tenant}/{batch_id}"


def batch_of(account: str) -> tuple[str, str]:
    """(tenant, batch id) of a batch's account (:func:`batch_account`)."""
    tenant, _, batch_id = account[len(BATCH_ACCOUNT) :].partition("/")
    return tenant, batch_id


def capped_batches(since: float) -> tuple[ColumnElement[bool], ...]:
    """The budget rows of batches with a cap, reserved in or set since ``since``."""
    return (
        BudgetRow.tenant.startswith(BATCH_ACCOUNT, autoescape=True),
        BudgetRow.period == TOTAL,
        BudgetRow.limit_nusd.is_not(None),
        BudgetRow.updated_at >= since,
    )


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget a job needs room in: its ``account/period`` and its limit — from the config,
    or (``limit_nusd`` None) the cap stored on the budget's row, which ``seed_nusd`` (a job's
    ``batch_budget_usd``) sets when none is stored yet. A batch's budget without a stored cap
    (and no seed) holds nothing: the job pays one read of the row, no write and no lock."""

    period: str
    limit_nusd: int | None
    seed_nusd: int | None = None

    @property
    def read_only_unless_capped(self) -> bool:
        return self.limit_nusd is None and self.seed_nusd is None


@dataclass(frozen=True, slots=True)
class Reserved:
    """Held in every budget (``ok``), or the first budget without room: its spend, the
    other jobs' live holds and its limit; ``conflict``: the job's seed differs from the cap
    another job set."""

    ok: bool
    spent_nusd: int
    held_nusd: int  # other jobs' live holds
    refused: int = -1  # the index of the budget without room
    limit_nusd: int | None = None
    conflict: bool = False
    held: tuple[str, ...] = ()  # ok: the periods the job's cost is held in (those with a limit)


async def _stored_cap(conn: Connection, account: str, period: str) -> bool:
    """Whether the budget row holds a limit (a batch's cap), as last committed."""
    statement = select(BudgetRow.limit_nusd).where(
        BudgetRow.tenant == account, BudgetRow.period == period
    )
    return (await conn.execute(statement)).scalar_one_or_none() is not None


class BudgetLedger:
    """Stateless SQL over ``budgets`` and ``budget_holds``."""

    @staticmethod
    async def reserve(
        conn: Connection,
        hold: Hold,
        budgets: list[Budget],
        owner: str,
        now: float,
        expires_at: float,
    ) -> Reserved:
        """Hold the job's maximum cost in every budget if each one's spend + live holds (of
        every job of the account) + it stay within its limit. The budget rows' locks are
        taken in the order given (tenant, team, batch), so two workers cannot deadlock.

        A batch's cap is read here, in the reservation's transaction, for every job of the
        batch: a cap stored by a job or an operator committed before this statement binds the
        job whichever worker stored it and however long ago. A batch without one is read, not
        written: no row, no lock (:attr:`Budget.read_only_unless_capped`)."""
        held_in: list[Budget] = []
        for index, budget in enumerate(budgets):
            account, period = account_period(budget.period, hold.tenant)
            if budget.read_only_unless_capped and not await _stored_cap(conn, account, period):
                continue  # a batch without a cap: nothing to hold
            insert = dialect_insert(conn)(BudgetRow).values(
                tenant=account,
                period=period,
                spent_nusd=0,
                updated_at=now,
                limit_nusd=budget.seed_nusd if budget.limit_nusd is None else None,
                limit_source=(
                    "job" if budget.limit_nusd is None and budget.seed_nusd is not None else None
                ),
            )
            set_: dict[str, Any] = {"updated_at": now}
            if budget.limit_nusd is None and budget.seed_nusd is not None:  # the first seed wins
                set_["limit_nusd"] = func.coalesce(BudgetRow.limit_nusd, budget.seed_nusd)
                set_["limit_source"] = func.coalesce(BudgetRow.limit_source, "job")
            row = (
                await conn.execute(  # an upsert that takes the budget row's lock
                    insert.on_conflict_do_update(
                        index_elements=["tenant", "period"], set_=set_
                    ).returning(BudgetRow.spent_nusd, BudgetRow.limit_nusd, BudgetRow.limit_source)
                )
            ).one()
            spent, stored, source = int(row[0]), row[1], row[2]
            limit = budget.limit_nusd if budget.limit_nusd is not None else stored
            if (
                budget.limit_nusd is None
                and budget.seed_nusd is not None
                and source == "job"
                and stored != budget.seed_nusd
            ):
                return Reserved(False, spent, 0, index, stored, conflict=True)
            if limit is None:  # a batch without a cap: nothing to hold
                continue
            held = (
                await conn.execute(
                    select(func.coalesce(func.sum(BudgetHoldRow.amount_nusd), 0)).where(
                        BudgetHoldRow.period == budget.period,
                        or_(
                            BudgetHoldRow.tenant != hold.tenant,
                            BudgetHoldRow.job_id != hold.job_id,
                        ),
                        BudgetHoldRow.expires_at > now,
                    )
                )
            ).scalar_one()
            if spent + int(held) + hold.amount_nusd > int(limit):
                return Reserved(False, spent, int(held), index, int(limit))
            held_in.append(budget)
        for budget in held_in:
            values = {"amount_nusd": hold.amount_nusd, "owner": owner, "expires_at": expires_at}
            await conn.execute(
                dialect_insert(conn)(BudgetHoldRow)
                .values(tenant=hold.tenant, job_id=hold.job_id, period=budget.period, **values)
                .on_conflict_do_update(index_elements=["tenant", "job_id", "period"], set_=values)
            )
        return Reserved(True, 0, 0, held=tuple(budget.period for budget in held_in))

    @staticmethod
    async def settle(
        conn: Connection, tenant: str, job_id: str, key: str, cost_nusd: int, owner: str
    ) -> None:
        """Add a job's actual cost to the spend of each of its budgets (``key``:
        :attr:`Hold.key`) and drop its holds (this worker's, or the batch lane's when the job
        went through a provider batch)."""
        if cost_nusd:
            for period in periods_of(key):
                account, bare = account_period(period, tenant)
                await conn.execute(
                    update(BudgetRow)
                    .where(BudgetRow.tenant == account, BudgetRow.period == bare)
                    .values(spent_nusd=BudgetRow.spent_nusd + cost_nusd)
                )
        await conn.execute(
            delete(BudgetHoldRow).where(
                BudgetHoldRow.tenant == tenant,
                BudgetHoldRow.job_id == job_id,
                BudgetHoldRow.owner.in_([owner, BATCH_OWNER]),
            )
        )

    @staticmethod
    async def drop(conn: Connection, tenant: str, job_id: str, owner: str) -> None:
        await conn.execute(
            delete(BudgetHoldRow).where(
                BudgetHoldRow.tenant == tenant,
                BudgetHoldRow.job_id == job_id,
                BudgetHoldRow.owner == owner,
            )
        )
