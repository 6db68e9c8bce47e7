"""What one job sends a deployment — its :class:`ChatCall` or :class:`EmbeddingCall`, online or
through a Batch API — and the embedding output it gets back."""

from __future__ import annotations

from broker.config import DeploymentConfig
from schemas.jobs import JobKind, JobRequest
from schemas.results import EmbeddingOutput
from workers.calls import tokens
from workers.providers.base import ChatCall, EmbeddingCall, WireMessages


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
