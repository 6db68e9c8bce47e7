"""A worker's view of the prompt templates: which version a job gets, rendered.

A job that pins ``template.version`` gets that version. Otherwise, when its route splits the
template's traffic (``template_split`` in the config), the job's share is chosen by a hash of
(tenant, job_id) — stable, so a redelivered job renders the same version — and weighted as
configured; without a split it gets the latest version. The result records the name and
version used.

Versions never change once pushed, so they are cached for the process's life (bounded); the
latest version of a name is re-read after ``LATEST_TTL_S`` so a push reaches running workers
without a restart. Database trouble surfaces as ``LedgerUnavailable`` (the job waits for the
database, unlost); a template that does not exist is a ``TemplateError`` (the job is rejected).

A template named ``TENANT/NAME`` (``headway templates push`` of a file whose ``name`` is
``acme/support``) belongs to tenant ``TENANT``: another tenant's job naming it is told there is
no such template. Any other name is shared by every tenant.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from broker.config import RouteConfig, TemplateSplit
from broker.errors import TemplateError
from schemas.jobs import TemplateRef
from workers.ledger import template_rows as store
from workers.ledger.database.transactions import Transact
from workers.templates.rendering import Template

LATEST_TTL_S = 10.0  # how long a worker may keep rendering the previous latest version
MISSING_TTL_S = 10.0  # how long a missing version is remembered as missing
CACHE_MAX = 1024


@dataclass(frozen=True, slots=True)
class Rendered:
    messages: list[dict[str, str]]
    template: str
    version: int


def may_render(name: str, tenant: str) -> bool:
    """Whether ``tenant``'s jobs may use template ``name``: a template named ``TENANT/NAME``
    belongs to that tenant (its system prompt is its own); any other name is shared."""
    owner, slash, _ = name.partition("/")
    return not slash or owner == tenant


class TemplateCatalog:
    """``await catalog.render(ref, route, tenant, job_id)``; ``run`` runs a database read
    (the ledger writer's ``run``)."""

    def __init__(self, run: Transact, *, latest_ttl_s: float = LATEST_TTL_S) -> None:
        self._run = run
        self._latest_ttl_s = latest_ttl_s
        self._versions: dict[tuple[str, int], Template] = {}
        self._latest: dict[str, tuple[float, int | None]] = {}
        self._missing: dict[tuple[str, int], float] = {}

    async def render(
        self, ref: TemplateRef, route: RouteConfig, tenant: str, job_id: str
    ) -> Rendered:
        if not may_render(ref.name, tenant):  # said as if it did not exist: no probing
            raise TemplateError(f"template.name: no template named '{ref.name}'")
        template, also_known = await self._choose(ref, route, tenant, job_id)
        messages = template.render(ref.variables, also_known)
        return Rendered(messages, template.name, template.version)

    async def _choose(
        self, ref: TemplateRef, route: RouteConfig, tenant: str, job_id: str
    ) -> tuple[Template, frozenset[str]]:
        if ref.version is not None:
            pinned = await self._version(ref.name, ref.version)
            if pinned is None:
                if await self._latest_version(ref.name) is None:
                    raise TemplateError(f"template.name: no template named '{ref.name}'")
                raise TemplateError(f"template.version: '{ref.name}' has no version {ref.version}")
            return pinned, frozenset()
        splits = route.split_of(ref.name)
        if not splits:
            latest = await self._latest_version(ref.name)
            found = await self._version(ref.name, latest) if latest is not None else None
            if found is None:
                raise TemplateError(f"template.name: no template named '{ref.name}'")
            return found, frozenset()
        candidates = [await self._split_version(split) for split in splits]
        chosen = candidates[_pick([s.weight for s in splits], tenant, job_id)]
        # a variable any version of the split uses is known, only perhaps unused by this one
        return chosen, frozenset().union(*(c.variables for c in candidates))

    async def _split_version(self, split: TemplateSplit) -> Template:
        found = await self._version(split.template, split.version)
        if found is None:
            raise TemplateError(
                f"template.version: the route splits '{split.template}' to version "
                f"{split.version}, which does not exist (push it: headway templates push)"
            )
        return found

    async def _version(self, name: str, version: int) -> Template | None:
        key = (name, version)
        cached = self._versions.get(key)
        if cached is not None:
            return cached
        if self._missing.get(key, 0.0) > time.monotonic():
            return None
        found: Template | None = await self._run(lambda conn: store.get(conn, name, version))
        if found is None:
            self._missing[key] = time.monotonic() + MISSING_TTL_S
            _bound(self._missing)
            return None
        self._versions[key] = found
        _bound(self._versions)
        return found

    async def _latest_version(self, name: str) -> int | None:
        now = time.monotonic()
        expires, known = self._latest.get(name, (0.0, None))
        if expires > now:
            return known
        latest: int | None = await self._run(lambda conn: store.latest_version(conn, name))
        self._latest[name] = (now + self._latest_ttl_s, latest)
        _bound(self._latest)
        return latest


def _pick(weights: list[float], tenant: str, job_id: str) -> int:
    """The index a job falls into: stable per (tenant, job_id), proportional to weight."""
    digest = hashlib.blake2b(f"{tenant}\x00{job_id}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") / 2**64 * sum(weights)
    for index, weight in enumerate(weights):
        point -= weight
        if point < 0:
            return index
    return len(weights) - 1


def _bound(cache: dict[Any, Any]) -> None:
    if len(cache) > CACHE_MAX:
        cache.clear()  # rare: more distinct templates than a worker renders at once
