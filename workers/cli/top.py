"""``headway top``: a live terminal view of running workers, read from their ``/metrics``.

Every ``interval`` it scrapes each worker's ``/metrics`` (``--url``, repeatable), adds the
workers up and shows: jobs finished per second by status, consumer lag and buffered jobs per
lane, jobs in flight, spend and tokens per tenant and route (totals since the workers started,
and the rate over the last interval), open circuits, and how many workers are ready. Rates come
from the difference between two scrapes; a worker that restarted (its counters fell) counts
from zero.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from workers.cli.support import shown

Labels = tuple[tuple[str, str], ...]
CIRCUITS = {0.0: "closed", 1.0: "half-open", 2.0: "open"}


@dataclass
class Snapshot:
    """What the scraped workers report together, at ``taken_at`` (monotonic seconds)."""

    taken_at: float = 0.0
    workers: int = 0
    reachable: int = 0
    ready: int = 0
    in_flight: float = 0.0
    jobs: dict[Labels, float] = field(default_factory=lambda: collections.defaultdict(float))
    cost: dict[Labels, float] = field(default_factory=lambda: collections.defaultdict(float))
    tokens: dict[Labels, float] = field(default_factory=lambda: collections.defaultdict(float))
    lag: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))
    buffered: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))
    circuits: dict[str, float] = field(default_factory=dict)

    def add(self, text: str) -> None:
        """Add one worker's ``/metrics`` text."""
        self.reachable += 1
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self._add(sample.name, dict(sample.labels), sample.value)

    def _add(self, name: str, labels: dict[str, str], value: float) -> None:
        def key(*names: str) -> Labels:
            return tuple((n, labels.get(n, "")) for n in names)

        if name == "headway_jobs_total":
            self.jobs[key("status", "tenant", "route")] += value
        elif name == "headway_cost_usd_total":
            self.cost[key("tenant", "route")] += value
        elif name == "headway_tokens_total":
            self.tokens[key("tenant", "route")] += value
        elif name == "headway_consumer_lag":
            self.lag[labels.get("lane", "")] += value
        elif name == "headway_buffered_jobs":
            self.buffered[labels.get("lane", "")] += value
        elif name == "headway_in_flight":
            self.in_flight += value
        elif name == "headway_ready":
            self.ready += int(value)
        elif name == "headway_circuit_state":
            deployment = labels.get("deployment", "")
            self.circuits[deployment] = max(value, self.circuits.get(deployment, 0.0))


async def scrape(urls: Sequence[str], client: httpx.AsyncClient) -> Snapshot:
    """One snapshot of all workers; an unreachable one is counted, not fatal."""
    snapshot = Snapshot(taken_at=time.monotonic(), workers=len(urls))
    answers = await asyncio.gather(*(client.get(url) for url in urls), return_exceptions=True)
    for answer in answers:
        if isinstance(answer, httpx.Response) and answer.status_code == 200:
            snapshot.add(answer.text)
    return snapshot


def _rate(now: float, before: float | None, seconds: float) -> float:
    if before is None or seconds <= 0:
        return 0.0
    return max(0.0, now - before) / seconds if now >= before else now / seconds


def _rows(totals: dict[Labels, float]) -> dict[tuple[str, ...], float]:
    return {tuple(value for _, value in labels): total for labels, total in totals.items()}


def render(current: Snapshot, previous: Snapshot | None) -> Group:
    """One frame: the summary line and the tables."""
    seconds = current.taken_at - previous.taken_at if previous is not None else 0.0
    finished = sum(current.jobs.values())
    earlier = sum(previous.jobs.values()) if previous is not None else None
    summary = Text.assemble(
        ("headway top  ", "bold"),
        f"workers {current.reachable}/{current.workers} reachable, {current.ready} ready  ·  ",
        f"in flight {current.in_flight:,.0f}  ·  finished {finished:,.0f}  ·  ",
        (f"{_rate(finished, earlier, seconds):,.1f} jobs/s", "bold green"),
    )
    return Group(
        summary,
        _lanes(current),
        _statuses(current, previous, seconds),
        _spend(current, previous, seconds),
        _circuits(current),
    )


def _lanes(current: Snapshot) -> Table:
    table = Table(title="lanes", title_justify="left", expand=False)
    table.add_column("lane")
    table.add_column("lag", justify="right")
    table.add_column("buffered", justify="right")
    for lane in ("high", "normal", "low"):
        lag, buffered = current.lag.get(lane, 0.0), current.buffered.get(lane, 0.0)
        table.add_row(lane, f"{lag:,.0f}", f"{buffered:,.0f}")
    return table


def _statuses(current: Snapshot, previous: Snapshot | None, seconds: float) -> Table:
    table = Table(title="jobs by status", title_justify="left")
    for name in ("status", "tenant", "route", "total"):
        table.add_column(name, justify="right" if name == "total" else "left")
    table.add_column("per s", justify="right")
    before = _rows(previous.jobs) if previous is not None else {}
    for row, total in sorted(_rows(current.jobs).items()):
        rate = _rate(total, before.get(row), seconds) if previous is not None else 0.0
        table.add_row(*map(shown, row), f"{total:,.0f}", f"{rate:,.1f}")
    return table


def _spend(current: Snapshot, previous: Snapshot | None, seconds: float) -> Table:
    table = Table(title="spend by tenant and route", title_justify="left")
    for name in ("tenant", "route", "USD", "USD/h", "tokens"):
        table.add_column(name, justify="left" if name in ("tenant", "route") else "right")
    before = _rows(previous.cost) if previous is not None else {}
    tokens = _rows(current.tokens)
    for row, total in sorted(_rows(current.cost).items()):
        per_hour = _rate(total, before.get(row), seconds) * 3600 if previous is not None else 0.0
        figures = (f"{total:,.6f}", f"{per_hour:,.4f}", f"{tokens.get(row, 0):,.0f}")
        table.add_row(*map(shown, row), *figures)
    return table


def _circuits(current: Snapshot) -> Text:
    unhealthy = {d: v for d, v in current.circuits.items() if v > 0}
    if not unhealthy:
        return Text(f"circuits: all {len(current.circuits)} closed", style="green")
    named = ", ".join(f"{d} {CIRCUITS.get(v, v)}" for d, v in sorted(unhealthy.items()))
    return Text(f"circuits: {named}", style="bold red")


async def run_top(
    urls: Iterable[str], console: Console, interval_s: float = 2.0, frames: int | None = None
) -> None:
    """Refresh every ``interval_s`` until Ctrl-C (or ``frames`` frames: scripts and tests)."""
    targets = [u if u.endswith("/metrics") else u.rstrip("/") + "/metrics" for u in urls]
    previous: Snapshot | None = None
    drawn = 0
    async with httpx.AsyncClient(timeout=max(1.0, interval_s)) as client:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while frames is None or drawn < frames:
                current = await scrape(targets, client)
                live.update(render(current, previous), refresh=True)
                previous, drawn = current, drawn + 1
                if frames is None or drawn < frames:
                    await asyncio.sleep(interval_s)
