"""Budget alerts, exactly once across workers: a row per alert, then a publish per row.

An alert is a ``budget_alerts`` row keyed by what it alerts — (scope, scope key, period, kind,
threshold) — inserted with ``ON CONFLICT DO NOTHING``: however many workers notice 80 % crossed
at once, one row exists. Thresholds are noticed by every worker's budget-gauge refresh (the
spend it just read); ``budget_exhausted`` by the admission that first refuses a job for want of
budget; ``budget_reset`` by the refresh that finds a deferring tenant in a new period after an
exhausted one. Rows are born unpublished; one worker at a time (the ``alerts`` lease) publishes
them to ``<prefix>.alerts`` and marks them. The event id derives from the row's key, so a worker
killed between publishing and marking leaves a row the next holder publishes again *as the same
event* — readers dedupe by ``event_id``; a worker killed before the insert commits leaves nothing
to publish, and the next refresh notices the crossing again. Tenants with an
``alert_webhook_url`` get each alert POSTed after it is on the topic (``webhooks/deliveries.py``,
told by ``on_published``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, or_, select, update

from broker.config import BudgetPeriod, HeadwayConfig, OnBudgetExhausted, TeamConfig, TenantConfig
from broker.topics import Topics
from schemas.alerts import AlertEvent
from workers.admission.periods import period_start, previous_period
from workers.ledger.database.models import BudgetAlertRow
from workers.ledger.database.statements import dialect_insert
from workers.ledger.database.transactions import Connection, Transact
from workers.ledger.retention.steps import release_lease, take_lease
from workers.settle.publisher import Outgoing

log = logging.getLogger(__name__)

LEASE = "alerts"
LEASE_S = 10.0  # a publisher killed mid-publish holds it this long at most
PUBLISH_BATCH = 200


@dataclass(frozen=True, slots=True)
class Alert:
    scope: str
    scope_key: str
    period: str  # the budget period's key: day:2026-12-03, month:2026-12, total
    kind: str
    threshold: str  # '' for kinds without one
    event: AlertEvent

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.scope, self.scope_key, self.period, self.kind, self.threshold)


def event_id(scope: str, scope_key: str, period: str, kind: str, threshold: str) -> str:
    digest = hashlib.sha256("\x00".join((scope, scope_key, period, kind, threshold)).encode())
    return "alert-" + digest.hexdigest()[:40]


def alert(
    name: str,
    period: str,
    kind: str,
    spent_usd: float,
    budget_usd: float,
    at: datetime,
    threshold: float | None = None,
    scope: str = "tenant",
) -> Alert:
    """An alert of a budget: ``name`` is a tenant's account, a team's name, or a batch's
    ``tenant/batch_id`` (``scope``)."""
    mark = "" if threshold is None else f"{threshold:g}"
    tenant, batch_id = name.split("/", 1) if scope == "batch" else (name, None)
    event = AlertEvent(
        event_id=event_id(scope, name, period, kind, mark),
        kind=kind,
        scope=scope,
        tenant=None if scope == "team" else tenant,
        team=name if scope == "team" else None,
        batch_id=batch_id,
        threshold=threshold,
        spent_usd=spent_usd,
        budget_usd=budget_usd,
        period=period.partition(":")[0],
        period_start=period_start(period),
        at=at,
    )
    return Alert(scope, name, period, kind, mark, event)


async def insert_alerts(conn: Connection, alerts: Sequence[Alert], now: float) -> None:
    for found in alerts:
        scope, scope_key, period, kind, threshold = found.key
        await conn.execute(
            dialect_insert(conn)(BudgetAlertRow)
            .values(
                scope=scope,
                scope_key=scope_key,
                period=period,
                kind=kind,
                threshold=threshold,
                event_id=found.event.event_id,
                payload=found.event.model_dump_json(),
                created_at=now,
                published_at=None,
            )
            .on_conflict_do_nothing()
        )


@dataclass(frozen=True, slots=True)
class Spend:
    """A budget's spend in its current period, as one refresh read it: a tenant's (``name``
    = its account), a team's, or a capped batch's (``tenant/batch_id``)."""

    name: str
    period: str  # the period's key
    budget_usd: float
    spent_usd: float
    scope: str = "tenant"

    @property
    def tenant(self) -> str:
        """Whose thresholds apply: the tenant's (a batch's tenant's), or the team's."""
        return owner_of(self.name)


def crossed(config: HeadwayConfig, spends: Sequence[Spend], at: datetime) -> list[Alert]:
    """Each budget's thresholds its spend in the current period has reached."""
    return [
        alert(s.name, s.period, "budget_threshold", s.spent_usd, s.budget_usd, at, threshold,
              s.scope)
        for s in spends
        for threshold in config.alert_thresholds(s.tenant, s.scope)
        if s.spent_usd >= threshold * s.budget_usd
    ]  # fmt: skip


def _deferring(config: HeadwayConfig, spend: Spend) -> BudgetPeriod | None:
    """The period of a deferring tenant's or team's budget (None: it rejects, or is a
    batch's: a batch's cap never resets)."""
    owner: TeamConfig | TenantConfig | None = None
    if spend.scope == "team":
        owner = config.teams.get(spend.name)
    elif spend.scope == "tenant":
        owner = config.tenants.get(spend.name)
    if owner is None or owner.on_budget_exhausted is not OnBudgetExhausted.DEFER:
        return None
    return owner.budget_period


class AlertPublisher:
    """Notices alerts from spend, and publishes unpublished ones under the ``alerts`` lease."""

    def __init__(
        self,
        config: HeadwayConfig,
        run: Transact,
        publish: Callable[[Sequence[Outgoing]], Awaitable[None]],
        topics: Topics,
        owner: str,
        clock: Callable[[], float],
        on_published: Callable[[], None] | None = None,  # alerts are on the topic (webhooks)
    ) -> None:
        self._config = config
        self._run = run
        self._publish = publish
        self._topics = topics
        self._owner = owner
        self._clock = clock
        self._on_published = on_published

    async def notice(self, spends: Sequence[Spend]) -> None:
        now = self._clock()
        at = datetime.fromtimestamp(now, UTC)
        alerts = crossed(self._config, spends, at)
        resets = await self._run(lambda conn: self._resets(conn, spends, at))
        if alerts or resets:
            await self._run(lambda conn: insert_alerts(conn, [*alerts, *resets], now))

    async def _resets(self, conn: Connection, spends: Sequence[Spend], at: datetime) -> list[Alert]:
        """``budget_reset`` for each deferring tenant whose previous period was exhausted."""
        wanted: dict[tuple[str, str, str], Spend] = {}
        for spend in spends:
            period = _deferring(self._config, spend)
            before = None if period is None else previous_period(period, at)
            if before is not None:
                wanted[(spend.scope, spend.name, before)] = spend
        if not wanted:
            return []
        rows = await conn.execute(
            select(BudgetAlertRow.scope, BudgetAlertRow.scope_key, BudgetAlertRow.period).where(
                BudgetAlertRow.kind == "budget_exhausted",
                or_(*(and_(BudgetAlertRow.scope == s, BudgetAlertRow.scope_key == n,
                           BudgetAlertRow.period == p) for s, n, p in wanted)),
            )
        )  # fmt: skip
        resets = []
        for scope, name, before in rows:
            s = wanted[(scope, name, before)]
            resets.append(
                alert(name, s.period, "budget_reset", s.spent_usd, s.budget_usd, at, None, scope)
            )
        return resets

    async def publish_pending(self) -> int:
        """Publish unpublished alerts (oldest first) if this worker holds the lease."""
        now = self._clock()
        held = await self._run(
            lambda conn: take_lease(conn, LEASE, self._owner, now, now + LEASE_S)
        )
        if not held:
            return 0
        try:
            rows = await self._run(self._unpublished)
            if rows:
                records = [  # key: the tenant (a batch's tenant), or the team
                    Outgoing(self._topics.alerts, owner_of(key).encode(), payload.encode())
                    for key, payload, _ in rows
                ]
                await self._publish(records)
                ids = [event for _, _, event in rows]
                await self._run(lambda conn: _mark(conn, ids, self._clock()))
                if self._on_published is not None:
                    self._on_published()
            return len(rows)
        finally:
            await self._run(lambda conn: release_lease(conn, LEASE, self._owner))

    @staticmethod
    async def _unpublished(conn: Connection) -> list[tuple[str, str, str]]:
        rows = await conn.execute(
            select(BudgetAlertRow.scope_key, BudgetAlertRow.payload, BudgetAlertRow.event_id)
            .where(BudgetAlertRow.published_at.is_(None))
            .order_by(BudgetAlertRow.created_at)
            .limit(PUBLISH_BATCH)
        )
        return [(key, payload, event) for key, payload, event in rows]


def owner_of(scope_key: str) -> str:
    """Whose an alert is: the tenant (a batch's ``tenant/batch_id`` too), or the team — its
    Kafka key, the webhook it goes to, the thresholds that apply."""
    return scope_key.split("/", 1)[0]


async def _mark(conn: Connection, event_ids: list[str], now: float) -> None:
    await conn.execute(
        update(BudgetAlertRow)
        .where(BudgetAlertRow.event_id.in_(event_ids))
        .values(published_at=now)
    )
