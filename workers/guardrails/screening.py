"""Guardrails applied to a job: the policies of its tenant and its route, in that order.

Before the call (:meth:`Guardrails.screen`): blocked terms, patterns and the injection
heuristic look at the texts as submitted; then PII is replaced by placeholders; then plug-ins
see (and may rewrite) the redacted texts. After the call (:meth:`Screened.check_output`):
blocked terms and patterns and plug-ins look at the output as the provider wrote it, and the
job's own PII values are put back if a policy asks for it.

A block ends the job ``rejected``/``content_blocked`` (after the call, its spend is still
recorded); flags are named on the result (``guardrail_flags``) and allowed through.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from broker.config import GuardrailPolicy, HeadwayConfig, InjectionAction, RouteConfig
from broker.errors import ConfigError
from workers.guardrails.base import Context, Guardrail, Verdict
from workers.guardrails.injection import InjectionHeuristic
from workers.guardrails.normal import plain
from workers.guardrails.pii import PiiKind, Redaction
from workers.guardrails.terms import BlockedContent

#: (guardrail name, action: redacted | blocked | flagged, count) — for metrics
Observer = Callable[[str, str, int], None]


@dataclass(frozen=True, slots=True)
class _Policy:
    pii: frozenset[PiiKind]
    restore: bool
    guards: tuple[Guardrail, ...]  # checks on the texts as submitted (terms, injection)
    plugins: tuple[Guardrail, ...]  # run on the redacted texts


@dataclass(slots=True)
class Screened:
    """A job that passed its inbound guardrails: the texts to send, and what the output
    check needs (its policies, its PII placeholders)."""

    texts: list[str]
    context: Context
    policies: tuple[_Policy, ...]
    redaction: Redaction | None = None
    restore: bool = False
    flags: list[str] = field(default_factory=list)
    observe: Observer | None = None
    blocked: str | None = None  # the inbound checks stopped the job: why

    async def check_output(self, text: str) -> Verdict:
        """The output to deliver (``text``), or why it is blocked."""
        for policy in self.policies:
            for guard in (*policy.guards, *policy.plugins):
                verdict = await guard.outbound(text, self.context)
                if verdict.blocked is not None:
                    self._observe(guard.name, "blocked")
                    return verdict
                text = verdict.text if verdict.text is not None else text
                self._flag(guard.name, verdict)
        if self.restore and self.redaction is not None:
            text = self.redaction.restore(text)
        return Verdict(text=text, flags=tuple(self.flags))

    async def through(self, guards: list[Guardrail]) -> str | None:
        """Pass the texts through ``guards`` in order (each may rewrite them); the first
        block's reason, or None."""
        for guard in guards:
            verdict = await guard.inbound(self.texts, self.context)
            if verdict.blocked is not None:
                self._observe(guard.name, "blocked")
                return verdict.blocked
            if verdict.texts is not None:
                if len(verdict.texts) != len(self.texts):
                    raise ValueError(f"guardrail {guard.name!r} changed the number of texts")
                self.texts = verdict.texts
            self._flag(guard.name, verdict)
        return None

    def _flag(self, name: str, verdict: Verdict) -> None:
        if verdict.flags:
            self.flags.extend(verdict.flags)
            self._observe(name, "flagged", len(verdict.flags))

    def _observe(self, name: str, action: str, count: int = 1) -> None:
        if self.observe is not None:
            self.observe(name, action, count)


class Guardrails:
    """Built once per worker from the config; plug-in factories are imported here, so a bad
    plug-in name stops the worker at start with the policy named."""

    def __init__(self, config: HeadwayConfig, observe: Observer | None = None) -> None:
        self._config = config
        self._observe = observe
        self._policies = {name: _build(name, policy) for name, policy in config.guardrails.items()}

    def applies(self, tenant: str, route: RouteConfig) -> bool:
        return bool(self._names(tenant, route))

    def _names(self, tenant: str, route: RouteConfig) -> list[str]:
        settings = self._config.tenant(tenant)
        names = list(settings.guardrails) if settings is not None else []
        return names + [name for name in route.guardrails if name not in names]

    async def screen(
        self, texts: list[str], tenant: str, route_name: str, route: RouteConfig, job_id: str
    ) -> Screened:
        """Run the inbound checks; the Screened's ``blocked`` says why the job must stop."""
        policies = tuple(self._policies[name] for name in self._names(tenant, route))
        screened = Screened(texts, Context(tenant, route_name, job_id), policies)
        screened.observe = self._observe
        screened.blocked = await self._inbound(screened)
        return screened

    async def _inbound(self, screened: Screened) -> str | None:
        """Checks on the texts as submitted, then PII placeholders, then plug-ins."""
        blocked = await screened.through([g for p in screened.policies for g in p.guards])
        if blocked is not None:
            return blocked
        kinds = frozenset().union(*(p.pii for p in screened.policies))
        if kinds:
            redaction = Redaction(kinds)
            screened.texts = [redaction.redact(plain(text)) for text in screened.texts]
            screened.redaction = redaction
            screened.restore = any(p.restore for p in screened.policies)
            if redaction.found:
                screened._observe("pii", "redacted", redaction.found)
        return await screened.through([g for p in screened.policies for g in p.plugins])


def _build(name: str, policy: GuardrailPolicy) -> _Policy:
    guards: list[Guardrail] = []
    if policy.block_terms or policy.block_patterns:
        guards.append(BlockedContent(policy.block_terms, policy.block_patterns, policy.scan_output))
    if policy.injection is not InjectionAction.OFF:
        guards.append(InjectionHeuristic(block=policy.injection is InjectionAction.BLOCK))
    plugins = tuple(_plugin(name, path, policy.options) for path in policy.plugins)
    pii = frozenset(PiiKind(kind.value) for kind in policy.redact_pii)
    return _Policy(pii, policy.restore_pii, tuple(guards), plugins)


def _plugin(policy: str, path: str, options: dict[str, Any]) -> Guardrail:
    module_name, _, attribute = path.partition(":")
    where = f"guardrails.{policy}.plugins: {path!r}"
    try:
        factory: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            factory = getattr(factory, part)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"{where}: cannot import it: {error}") from None
    guard = factory(options)
    for needed in ("name", "inbound", "outbound"):
        if not hasattr(guard, needed):
            raise ConfigError(f"{where}: the guardrail it made has no {needed!r}")
    return cast(Guardrail, guard)
