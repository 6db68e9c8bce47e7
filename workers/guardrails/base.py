"""The guardrail protocol: look at a job's texts before the provider call and at the output
after it; allow (possibly rewritten), flag, or block.

Plug in your own (for example Microsoft Presidio, or a moderation model) by naming a factory
in the config — ``plugins = ["mypackage.guards:make"]`` — that takes the policy's ``options``
table and returns an object with this shape::

    class MyGuard:
        name = "my-guard"
        async def inbound(self, texts: list[str], context: Context) -> Verdict: ...
        async def outbound(self, text: str, context: Context) -> Verdict: ...

A guard that raises is treated like a bug in headway itself: the job is retried a bounded
number of times, then dead-lettered with a ``failed`` result — never sent on unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Context:
    tenant: str
    route: str
    job_id: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """``texts`` (inbound) or ``text`` (outbound): the content to go on with, rewritten or not;
    ``blocked``: why the job must stop (→ ``rejected``/``content_blocked``); ``flags``: what
    was noticed but allowed (named on the result)."""

    texts: list[str] | None = None
    text: str | None = None
    blocked: str | None = None
    flags: tuple[str, ...] = ()


class Guardrail(Protocol):
    name: str

    async def inbound(self, texts: list[str], context: Context) -> Verdict: ...

    async def outbound(self, text: str, context: Context) -> Verdict: ...
