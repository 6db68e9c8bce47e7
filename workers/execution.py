"""Calling providers for one job: retries per deployment, failover down the route's plan."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from broker.config import DeploymentConfig
from broker.errors import ProviderBadRequest, ProviderError
from schemas.jobs import JobKind, JobRequest
from schemas.results import ChatOutput, EmbeddingOutput
from workers.providers.base import ChatCall, EmbeddingCall, Provider
from workers.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """One provider call that returned usage."""

    provider: str
    deployment: DeploymentConfig
    input_tokens: int
    output_tokens: int
    cost_usd: float
    estimated: bool = False  # the provider reported no usage; tokens are our estimate


@dataclass(slots=True)
class Execution:
    attempts: int = 0
    output: ChatOutput | EmbeddingOutput | None = None
    served_by: ProviderCall | None = None
    calls: list[ProviderCall] = field(default_factory=list)
    error: ProviderError | None = None


class Executor:
    def __init__(
        self, providers: dict[str, Provider], retry: RetryPolicy, max_in_flight: int
    ) -> None:
        self._providers = providers
        self._retry = retry
        self._slots = asyncio.Semaphore(max_in_flight)

    async def execute(
        self,
        job: JobRequest,
        plan: list[DeploymentConfig],
        messages: list[dict[str, str]] | None,
        deadline: float | None = None,
    ) -> Execution:
        """Try each deployment of ``plan`` in turn; a permanent error stops at once.

        At most ``max_in_flight`` jobs of this process are with providers at any moment."""
        async with self._slots:
            return await self._execute(job, plan, messages, deadline)

    async def _execute(
        self,
        job: JobRequest,
        plan: list[DeploymentConfig],
        messages: list[dict[str, str]] | None,
        deadline: float | None,
    ) -> Execution:
        execution = Execution()
        for deployment in plan:
            try:
                await self._retry.call(
                    lambda d=deployment: self._call(job, d, messages, execution),  # type: ignore[misc]
                    deadline=deadline,
                    on_attempt=lambda: _count(execution),
                )
                return execution
            except ProviderError as error:
                execution.error = error
                if not error.retryable or (deadline is not None and time.monotonic() >= deadline):
                    return execution
        return execution

    async def _call(
        self,
        job: JobRequest,
        deployment: DeploymentConfig,
        messages: list[dict[str, str]] | None,
        execution: Execution,
    ) -> None:
        provider = self._providers.get(deployment.provider)
        if provider is None:
            raise ProviderBadRequest(f"provider {deployment.provider!r} is not available")
        params = job.params
        if job.kind is JobKind.CHAT:
            chat = await provider.chat(
                ChatCall(deployment.model, messages or [], params, job.job_id)
            )
            output: ChatOutput | EmbeddingOutput = ChatOutput(
                text=chat.text, finish_reason=chat.finish_reason
            )
            tokens_in, tokens_out, estimated = chat.input_tokens, chat.output_tokens, chat.estimated
        else:
            dimensions = params.dimensions if params else None
            embedded = await provider.embed(
                EmbeddingCall(deployment.model, job.inputs, dimensions, job.job_id)
            )
            output = EmbeddingOutput(embeddings=embedded.embeddings)
            tokens_in, tokens_out, estimated = embedded.input_tokens, 0, embedded.estimated
        call = ProviderCall(
            provider=deployment.provider,
            deployment=deployment,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost_usd=deployment.cost_usd(tokens_in, tokens_out),
            estimated=estimated,
        )
        execution.calls.append(call)
        execution.served_by = call
        execution.output = output
        execution.error = None


def _count(execution: Execution) -> None:
    execution.attempts += 1
