"""Budget periods: a period's key (``day:2026-12-03``, ``month:2026-12``, ``total``), when it
starts and ends, and the one before it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from broker.config import BudgetPeriod


def period_key(period: BudgetPeriod, at: datetime) -> str:
    if period is BudgetPeriod.DAY:
        return f"day:{at:%Y-%m-%d}"
    if period is BudgetPeriod.MONTH:
        return f"month:{at:%Y-%m}"
    return "total"


def period_end(period: BudgetPeriod, at: datetime) -> datetime | None:
    """When the period containing ``at`` resets (None: it never does)."""
    if period is BudgetPeriod.DAY:
        return datetime(at.year, at.month, at.day, tzinfo=UTC) + timedelta(days=1)
    if period is BudgetPeriod.MONTH:
        year, month = (at.year + 1, 1) if at.month == 12 else (at.year, at.month + 1)
        return datetime(year, month, 1, tzinfo=UTC)
    return None


def period_start(period: str) -> datetime | None:
    kind, _, value = period.partition(":")
    if kind == "day":
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    if kind == "month":
        return datetime.strptime(value, "%Y-%m").replace(tzinfo=UTC)
    return None


def previous_period(period: BudgetPeriod, now: datetime) -> str | None:
    if period is BudgetPeriod.DAY:
        return period_key(period, now - timedelta(days=1))
    if period is BudgetPeriod.MONTH:
        return period_key(period, now.replace(day=1) - timedelta(days=1))
    return None
