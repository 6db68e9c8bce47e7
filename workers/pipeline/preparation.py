"""Before a job may run: access checks, its route, and the chat messages it will send.

The outcome is either a :class:`Prepared` job (route, messages, template used) or the
:class:`Rejection` its result reports. Nothing here calls a provider or claims the job.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from broker.config import HeadwayConfig, RouteConfig, TenantConfig
from broker.errors import TemplateError
from broker.headers import RecordHeaders
from schemas.jobs import JobRequest
from schemas.results import ErrorCode
from workers.content.features import (
    NOTHING,
    Capabilities,
    Needs,
    Unsupported,
    allowed_regions,
    needs,
)
from workers.content.schema_check import CHECKS
from workers.content.sent_texts import Use, sent_texts, with_sent_texts
from workers.guardrails.normal import plain
from workers.guardrails.screening import Guardrails, Screened
from workers.pipeline.access import AccessControl, Rejection
from workers.providers.base import WireMessages
from workers.templates.catalog import TemplateCatalog


@dataclass(frozen=True, slots=True)
class Prepared:
    job: JobRequest  # as submitted, or with its embedding inputs redacted
    route: RouteConfig
    messages: WireMessages | None  # None: an embedding job
    template: str | None = None
    template_version: int | None = None
    screened: Screened | None = None  # its guardrails (for the output check)
    need: Needs = NOTHING  # what a deployment must take beyond text


class Preparation:
    def __init__(
        self,
        config: HeadwayConfig,
        access: AccessControl,
        catalog: TemplateCatalog,
        guardrails: Guardrails,
        capabilities: Capabilities | None = None,  # None: every deployment takes everything
    ) -> None:
        self.config = config
        self.access = access
        self.catalog = catalog
        self.guardrails = guardrails
        self.capabilities = capabilities

    async def prepare(
        self,
        job: JobRequest,
        tenant: TenantConfig | None,
        value: bytes,
        headers: RecordHeaders,
    ) -> Prepared | Rejection:
        checked = self._check(job, tenant, value, headers)
        if isinstance(checked, Rejection):
            return checked
        if job.params is not None and job.params.response_format is not None:
            # intake checked the schema's structure; its meta-schema and patterns off the loop
            refused = await CHECKS.schema_refused(job.params.response_format, job.tenant)
            if refused is not None:
                return Rejection(ErrorCode.INVALID_REQUEST, refused)
        prepared = Prepared(job, checked, None)
        if job.template is not None:
            try:
                rendered = await self.catalog.render(job.template, checked, job.tenant, job.job_id)
            except TemplateError as error:
                return Rejection(ErrorCode.INVALID_REQUEST, str(error))
            prepared = Prepared(
                job, checked, rendered.messages, rendered.template, rendered.version
            )
        elif job.messages is not None:
            messages: WireMessages = [
                {"role": m.role, "content": m.content}
                if m.plain
                else m.model_dump(mode="json", exclude_none=True)
                for m in job.messages
            ]
            prepared = Prepared(job, checked, messages)
        if self.guardrails.applies(job.tenant, checked):
            screened = await self._screen(prepared)
            if isinstance(screened, Rejection):
                return screened
            prepared = screened
        return self._able(prepared, tenant)

    def _able(self, prepared: Prepared, tenant: TenantConfig | None) -> Prepared | Rejection:
        """The job with what it needs of a deployment; refused when no deployment of its route
        can take it (a part or a parameter is never dropped) or none is in a region its tenant
        and route allow."""
        regions = allowed_regions(
            tenant.allowed_regions if tenant is not None else None,
            prepared.route.allowed_regions,
        )
        need = needs(prepared.job, prepared.messages, regions)
        if not need:
            return prepared
        if self.capabilities is not None:
            able = self.capabilities.able(prepared.job.route, prepared.route.deployments, need)
            if isinstance(able, Unsupported):
                return Rejection(ErrorCode(able.code), able.message)
        return dataclasses.replace(prepared, need=need)

    async def _screen(self, prepared: Prepared) -> Prepared | Rejection:
        """The job's inbound guardrails over every text its provider would receive
        (``workers/content/sent_texts.py``): blocked, or the job with its texts as they may
        be sent. A text that cannot be rewritten (an image URL, an id, a schema, a key…) and
        that a guardrail would rewrite — PII in it — blocks the job, naming the field."""
        job, messages = prepared.job, prepared.messages
        found = sent_texts(job, messages)
        screened = await self.guardrails.screen(
            [text.text for text in found], job.tenant, job.route, prepared.route, job.job_id
        )
        if screened.blocked is not None:
            return Rejection(ErrorCode.CONTENT_BLOCKED, screened.blocked)
        for text, after in zip(found, screened.texts, strict=True):
            if text.use is Use.AS_SENT and after not in (text.text, plain(text.text)):
                return Rejection(
                    ErrorCode.CONTENT_BLOCKED,
                    f"{text.where()}: holds PII and is sent as it is (it cannot be redacted)",
                )
        job, messages = with_sent_texts(job, messages, found, screened.texts)
        return dataclasses.replace(prepared, job=job, messages=messages, screened=screened)

    def _check(
        self,
        job: JobRequest,
        tenant: TenantConfig | None,
        value: bytes,
        headers: RecordHeaders,
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
