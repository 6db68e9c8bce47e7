"""AlertEvent: what workers publish on ``headway.alerts`` when a budget (a tenant's, a team's
or a batch's) crosses a threshold, is exhausted, or resets (issue 24). Key = tenant (the team
for a team's budget). An output: readers ignore fields they do not know (README
"Compatibility"); ``event_id`` is the same for every copy of one alert — dedupe by it."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class AlertEvent(BaseModel):
    model_config = ConfigDict(
        extra="ignore", frozen=True, json_schema_extra={"additionalProperties": True}
    )

    event_id: str = Field(description="one id per (scope, budget, period, kind, threshold)")
    kind: Literal["budget_threshold", "budget_exhausted", "budget_reset"] | str
    scope: Literal["tenant", "team", "batch"] | str
    tenant: str | None = Field(description="the tenant (its account); null for a team's budget")
    team: str | None = Field(default=None, description="scope team: the team")
    batch_id: str | None = Field(default=None, description="scope batch: the tenant's batch")
    threshold: float | None = Field(
        default=None, description="budget_threshold: the fraction crossed (0.8 = 80 %)"
    )
    spent_usd: float = Field(ge=0)
    budget_usd: float = Field(ge=0)
    period: str = Field(description="day, month or total")
    period_start: AwareDatetime | None = None
    at: AwareDatetime
