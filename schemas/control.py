"""ControlCommand: operator commands on ``headway.control`` (CONTRACT §5)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from schemas.jobs import BatchId, JobId, TenantName


class ControlCommand(BaseModel):
    """Cancel one job or a whole batch of a tenant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["cancel"]
    tenant: TenantName
    job_id: JobId | None = None
    batch_id: BatchId | None = None

    @model_validator(mode="after")
    def _one_target(self) -> ControlCommand:
        if (self.job_id is None) == (self.batch_id is None):
            raise ValueError("a cancel names exactly one of job_id or batch_id")
        return self
