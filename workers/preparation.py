"""Before a job may run: access checks, its route, and the chat messages it will send.

The outcome is either a :class:`Prepared` job (route, messages, template used) or the
:class:`Rejection` its result reports. Nothing here calls a provider or claims the job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from broker.config import HeadwayConfig, RouteConfig, TenantConfig
from schemas.jobs import JobRequest
from schemas.results import ErrorCode
from workers.access import AccessControl, Rejection
from workers.template_catalog import TemplateCatalog
from workers.templates import TemplateError


@dataclass(frozen=True, slots=True)
class Prepared:
    route: RouteConfig
    messages: list[dict[str, str]] | None  # None: an embedding job
    template: str | None = None
    template_version: int | None = None


class Preparation:
    def __init__(self, config: HeadwayConfig, catalog: TemplateCatalog) -> None:
        self.config = config
        self.access = AccessControl(config)
        self.catalog = catalog

    async def prepare(
        self,
        job: JobRequest,
        tenant: TenantConfig | None,
        value: bytes,
        headers: Iterable[tuple[str, bytes]] | None,
    ) -> Prepared | Rejection:
        checked = self._check(job, tenant, value, headers)
        if isinstance(checked, Rejection):
            return checked
        if job.template is not None:
            try:
                rendered = await self.catalog.render(job.template, checked, job.tenant, job.job_id)
            except TemplateError as error:
                return Rejection(ErrorCode.INVALID_REQUEST, str(error))
            return Prepared(checked, rendered.messages, rendered.template, rendered.version)
        if job.messages is not None:
            messages = [{"role": m.role, "content": m.content} for m in job.messages]
            return Prepared(checked, messages)
        return Prepared(checked, None)

    def _check(
        self,
        job: JobRequest,
        tenant: TenantConfig | None,
        value: bytes,
        headers: Iterable[tuple[str, bytes]] | None,
    ) -> Rejection | RouteConfig:
        refused = self.access.check(job, tenant, value, headers)
        if refused is not None:
            return refused
        route = self.config.routes.get(job.route)
        if route is None:
            return Rejection(ErrorCode.UNKNOWN_ROUTE, f"route: no route named '{job.route}'")
        if route.kind is not job.kind:
            return Rejection(
                ErrorCode.INVALID_REQUEST,
                f"kind: route '{job.route}' serves {route.kind.value} jobs, not {job.kind.value}",
            )
        return route
