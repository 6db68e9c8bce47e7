"""What one job sends a deployment — its :class:`ChatCall` or :class:`EmbeddingCall`, online or
through a Batch API — and what it gets back: the embedding output, and each answered call's
tokens and cost (:class:`ProviderCall`), and what executing the job came to
(:class:`Execution`: the executor's outcome, which settling turns into its result)."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.config import DeploymentConfig
from broker.errors import ProviderContentFiltered, ProviderError
from schemas.jobs import JobKind, JobRequest
from schemas.results import ChatOutput, EmbeddingOutput
from workers.calls import tokens
from workers.providers.base import ChatCall, EmbeddingCall, WireMessages


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """One provider call that returned usage."""

    provider: str
    deployment: DeploymentConfig
    input_tokens: int
    output_tokens: int
    cost_usd: float
    estimated: bool = False  # the provider reported no usage; tokens are our estimate
    cached: bool = False  # answered from the response cache: no call made, cost 0

    @classmethod
    def answered(
        cls, deployment: DeploymentConfig, tokens_in: int, tokens_out: int, estimated: bool
    ) -> ProviderCall:
        """An online call, at the deployment's online price."""
        cost = deployment.cost_usd(tokens_in, tokens_out)
        return cls(deployment.provider, deployment, tokens_in, tokens_out, cost, estimated)


def provider_call(
    job: JobRequest, deployment: DeploymentConfig, messages: WireMessages | None
) -> ChatCall | EmbeddingCall:
    """The call a job makes to one deployment (online or through its Batch API)."""
    if job.kind is JobKind.CHAT:
        return ChatCall(deployment.model, messages or [], tokens.call_params(job), job.job_id)
    params = job.params
    if params is None:
        return EmbeddingCall(deployment.model, job.inputs, None, job.job_id)
    return EmbeddingCall(deployment.model, job.inputs, params.dimensions, job.job_id, params.user)


def embedding_output(job: JobRequest, embeddings: list[list[float]]) -> EmbeddingOutput:
    encoding = job.params.encoding_format if job.params else None
    if encoding is None:
        return EmbeddingOutput(embeddings=embeddings)
    return EmbeddingOutput(embeddings=embeddings, encoding_format=encoding)


@dataclass(slots=True)
class Execution:
    """What executing one job came to: its output or last error, every answered call."""

    attempts: int = 0
    output: ChatOutput | EmbeddingOutput | None = None
    served_by: ProviderCall | None = None
    calls: list[ProviderCall] = field(default_factory=list)
    error: ProviderError | None = None
    park_s: float | None = None  # a retryable error asks for a wait too long to sleep on
    # the route's failover_on has content_filter: a deployment's content-policy refusal moves
    # the job to the next one; the refusals so far, by deployment
    failover_on_filter: bool = False
    filtered: dict[str, ProviderContentFiltered] = field(default_factory=dict)
    reasks: int = 1  # how many more times an answer failing its JSON schema is asked for
    # the job's billed input, estimated (set by the executor: what a deployment's tpm holds
    # and its reported usage is compared with; None for an answer the executor did not call)
    billed: tokens.BilledInput | None = None

    def input_estimate(self) -> int:
        assert self.billed is not None, "set by Executor.execute"
        return self.billed.tokens
