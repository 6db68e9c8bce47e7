"""ControlCommand: operator commands on ``headway.control`` (CONTRACT §5)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.jobs import BatchId, JobId, TenantName


class ControlCommand(BaseModel):
    """Cancel one job or a whole batch of a tenant (``cancel``), or set a batch's budget
    (``set_budget``: ``batch_id``, ``budget_usd`` and when it was set, ``at`` — of two sets,
    the later ``at`` wins on every worker, whatever order they read them in; a set dated more
    than 60 s past the time a worker reads it, or past its record's timestamp, is skipped).
    Tenants with ``require_signed_control`` apply only commands carrying a
    ``headway-signature`` made with their signing secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["cancel", "set_budget"]
    tenant: TenantName
    job_id: JobId | None = None
    batch_id: BatchId | None = None
    budget_usd: Annotated[float, Field(ge=0, le=1e9)] | None = None
    at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _one_target(self) -> ControlCommand:
        if self.action == "set_budget":
            if self.batch_id is None or self.job_id is not None:
                raise ValueError("set_budget names a batch_id (and no job_id)")
            if self.budget_usd is None or self.at is None:
                raise ValueError("set_budget needs budget_usd and at")
            return self
        if self.budget_usd is not None or self.at is not None:
            raise ValueError("budget_usd and at belong to set_budget")
        if (self.job_id is None) == (self.batch_id is None):
            raise ValueError("a cancel names exactly one of job_id or batch_id")
        return self
