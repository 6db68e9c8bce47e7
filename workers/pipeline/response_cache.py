"""Response cache: a deterministic request answered once is answered from the cache after.

Which requests: every embedding job, and chat jobs with ``temperature = 0`` or a ``seed``, on
routes with a ``[routes.NAME.cache]`` table. The key is a hash of the deployment
(``provider:model``) and the normalised request (kind, messages or inputs, parameters), within
a scope — the tenant by default, or shared by all tenants (``scope = "global"``). Any
deployment of the route may answer from the cache: a route lists deployments that are
interchangeable for its jobs.

With data residency (``allowed_regions``) only entries made by deployments in the job's
allowed regions are looked up. A hit is a result with ``cached = true`` and ``cost_usd = 0``,
and one usage event with ``cached = true``, cost 0 and the tokens the original call used
(tokens *saved*). It makes no provider call, takes no quota and holds no budget.

Identical requests in flight in one worker at the same time are coalesced: the first calls
the provider, the others wait for its answer and are served it as hits; if the first one
fails, each of the others calls for itself. (Across workers, the first answer stored wins.)
Residency holds there too: only jobs held to the same regions share a flight, and an answer
in flight, like a stored one, is served only from a deployment in the job's regions.

Entries are written with the result of the job whose call produced them (one transaction),
kept for the route's ``ttl_s``, and pruned by every worker: expired ones, then the oldest
beyond ``HEADWAY_CACHE_MAX_ENTRIES``. A small in-process copy of recent entries saves
database reads for repeats within one worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from broker.config import CacheScope, DeploymentConfig, RouteConfig
from schemas.jobs import JobKind, JobRequest
from schemas.results import ChatOutput, EmbeddingOutput
from workers.content.features import NOTHING, Needs
from workers.ledger import cache_rows as rows
from workers.ledger.cache_rows import CacheEntry
from workers.ledger.database.transactions import Transact
from workers.providers.base import WireMessages
from workers.providers.requests import Execution, ProviderCall

log = logging.getLogger(__name__)

MEMORY_ENTRIES = 4096
GLOBAL_SCOPE = "*"
_OUTPUT = TypeAdapter(ChatOutput | EmbeddingOutput)


@dataclass(frozen=True, slots=True)
class Request:
    """A cacheable job's request, normalised: what its cache keys are made of."""

    scope: str
    canonical: str  # JSON of kind, messages or inputs, and parameters
    flight: str  # coalescing key: the same request on the same route

    def key(self, deployment: DeploymentConfig) -> str:
        text = f"{deployment.key}\x00{self.canonical}"
        return hashlib.sha256(text.encode()).hexdigest()


def deterministic(job: JobRequest) -> bool:
    if job.kind is JobKind.EMBEDDING:
        return True
    params = job.params
    return params is not None and (params.temperature == 0 or params.seed is not None)


def normalise(job: JobRequest, route: RouteConfig, messages: WireMessages | None) -> Request | None:
    """The job's cache request, or None when the route has no cache or the job is not
    deterministic."""
    if route.cache is None or not deterministic(job):
        return None
    params = job.params.model_dump(exclude_none=True, mode="json") if job.params else {}
    if job.kind is JobKind.EMBEDDING:
        body: dict[str, Any] = {"kind": "embedding", "input": job.inputs, "params": params}
    else:
        body = {"kind": "chat", "messages": messages or [], "params": params}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    scope = job.tenant if route.cache.scope is CacheScope.TENANT else GLOBAL_SCOPE
    flight = hashlib.sha256(f"{scope}\x00{job.route}\x00{canonical}".encode()).hexdigest()
    return Request(scope, canonical, flight)


def allowed(route: RouteConfig, regions: frozenset[str] | None) -> list[DeploymentConfig]:
    """The route's deployments in ``regions`` (None: all of them): the only ones whose answers
    a job held to ``regions`` may be served, stored or in flight (data residency)."""
    if regions is None:
        return list(route.deployments)
    return [d for d in route.deployments if d.region in regions]


def served_from(
    entry: CacheEntry, route: RouteConfig, regions: frozenset[str] | None
) -> Execution | None:
    """An execution answered by ``entry`` (no call made), or None when its deployment is no
    longer in the route or is outside ``regions`` (an answer made elsewhere is not served)."""
    deployment = next(
        (
            d
            for d in allowed(route, regions)
            if d.provider == entry.provider and d.model == entry.deployment
        ),
        None,
    )
    if deployment is None:
        return None
    call = ProviderCall(
        provider=entry.provider,
        deployment=deployment,
        input_tokens=entry.input_tokens,
        output_tokens=entry.output_tokens,
        cost_usd=0.0,
        cached=True,
    )
    output = _OUTPUT.validate_json(entry.output_json)
    return Execution(attempts=0, output=output, served_by=call, calls=[call])


FlightKey = tuple[str, frozenset[str] | None]


def _flight_key(request: Request, regions: frozenset[str] | None) -> FlightKey:
    return (request.flight, regions)


class ResponseCache:
    def __init__(
        self,
        run: Transact,
        *,
        memory_entries: int = MEMORY_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._run = run
        self._clock = clock
        self._memory: OrderedDict[tuple[str, str], CacheEntry] = OrderedDict()
        self._memory_entries = memory_entries
        self._flights: dict[FlightKey, asyncio.Future[CacheEntry | None]] = {}

    # -- reading ------------------------------------------------------------------------------

    async def lookup(
        self, request: Request, route: RouteConfig, need: Needs = NOTHING
    ) -> Execution | None:
        """A live entry of any of the route's deployments, in the route's order — of those in
        a region the job may go to (an answer made elsewhere is not served: data residency)."""
        now = self._clock()
        keys = [(request.scope, request.key(d)) for d in allowed(route, need.regions)]
        found = {k: e for k in keys if (e := self._remembered(k, now)) is not None}
        if not found:
            entries: list[CacheEntry] = await self._run(lambda conn: rows.lookup(conn, keys, now))
            for entry in entries:
                self.remember(entry)
            found = {(e.scope, e.key): e for e in entries}
        for key in keys:
            served = served_from(found[key], route, need.regions) if key in found else None
            if served is not None:
                return served
        return None

    def _remembered(self, key: tuple[str, str], now: float) -> CacheEntry | None:
        entry = self._memory.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            del self._memory[key]
            return None
        self._memory.move_to_end(key)
        return entry

    def remember(self, entry: CacheEntry) -> None:
        self._memory[(entry.scope, entry.key)] = entry
        self._memory.move_to_end((entry.scope, entry.key))
        while len(self._memory) > self._memory_entries:
            self._memory.popitem(last=False)

    # -- writing ------------------------------------------------------------------------------

    def entry(
        self, request: Request, route: RouteConfig, execution: Execution
    ) -> CacheEntry | None:
        """What to store for a succeeded, uncached call (None: nothing, or too large)."""
        served = execution.served_by
        if execution.output is None or served is None or served.cached or route.cache is None:
            return None
        output_json = execution.output.model_dump_json()
        if len(output_json) > route.cache.max_entry_bytes:
            return None
        now = self._clock()
        return CacheEntry(
            scope=request.scope,
            key=request.key(served.deployment),
            provider=served.provider,
            deployment=served.deployment.model,
            output_json=output_json,
            input_tokens=served.input_tokens,
            output_tokens=served.output_tokens,
            created_at=now,
            expires_at=now + route.cache.ttl_s,
        )

    # -- coalescing ---------------------------------------------------------------------------

    def join(
        self, request: Request, regions: frozenset[str] | None
    ) -> asyncio.Future[CacheEntry | None] | None:
        """None: this job leads the flight (it calls, then :meth:`land`); else the future
        of the leader's entry (None when the leader got no answer). Jobs held to other
        ``regions`` fly apart: a leader may be answered where a follower may not go."""
        key = _flight_key(request, regions)
        leading = self._flights.get(key)
        if leading is not None:
            return leading
        self._flights[key] = asyncio.get_running_loop().create_future()
        return None

    def land(
        self, request: Request, regions: frozenset[str] | None, entry: CacheEntry | None
    ) -> None:
        flight = self._flights.pop(_flight_key(request, regions), None)
        if flight is not None and not flight.done():
            flight.set_result(entry)

    @property
    def flights(self) -> int:
        return len(self._flights)

    # -- pruning ------------------------------------------------------------------------------

    async def prune_forever(self, every_s: float, max_entries: int) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                dropped: int = await self._run(
                    lambda conn: rows.prune(conn, self._clock(), max_entries)
                )
            except Exception as error:  # the database's trouble; the next round tries again
                log.warning("response cache pruning failed: %s", error)
                continue
            if dropped:
                log.info("response cache: pruned %d entries", dropped)
