"""Embedding micro-batching: many single jobs, one provider request.

Embedding jobs for the same deployment (and output dimensions) join an open batch; it is
sent when it holds ``max_batch_inputs`` inputs, when the next job would push it past the
per-request token cap, or ``linger_s`` after it opened (≈20 ms). Each job gets its own
inputs' embeddings back, in order, and its share of the reported tokens (split by its
estimated share, largest remainder, so the shares add up to the provider's count exactly).

A failed combined call fails every job in it with the same error — their own rounds then
retry or fail over, and may batch again. A *permanent* error of a combined call of several
jobs (one bad input makes the provider refuse the whole request) is bisected: each half is
sent again until the bad job is alone, so one bad input fails only its own job.

The deployment's rpm/tpm/concurrency limits count combined requests, not jobs.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from broker.config import DeploymentConfig
from broker.errors import PermanentProviderError, ProviderError
from workers import tokens
from workers.limits import DeploymentLimiter, LimitBoard
from workers.providers.base import EmbeddingCall, EmbeddingResponse, Provider

DEFAULT_LINGER_S = 0.02
DEFAULT_MAX_BATCH_TOKENS = 250_000  # under OpenAI's 300k tokens per embeddings request
PACE_POLL_S = 0.05


@dataclass(slots=True)
class _Member:
    inputs: list[str]
    estimate: int
    future: asyncio.Future[EmbeddingResponse]


@dataclass(slots=True)
class _Batch:
    provider: Provider
    deployment: DeploymentConfig
    dimensions: int | None
    members: list[_Member] = field(default_factory=list)
    inputs: int = 0
    estimate: int = 0
    timer: asyncio.TimerHandle | None = None


class EmbeddingBatcher:
    def __init__(
        self,
        limits: LimitBoard,
        *,
        linger_s: float = DEFAULT_LINGER_S,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    ) -> None:
        self._limits = limits
        self._linger_s = linger_s
        self._max_tokens = max_batch_tokens
        self._open: dict[tuple[str, int | None], _Batch] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self.requests = 0  # combined provider requests sent

    async def embed(
        self,
        provider: Provider,
        deployment: DeploymentConfig,
        inputs: list[str],
        dimensions: int | None,
    ) -> EmbeddingResponse:
        """This job's embeddings, from a request it may share with other jobs."""
        limit = deployment.max_batch_inputs or 1
        estimate = tokens.input_tokens(None, inputs)
        key = (deployment.key, dimensions)
        batch = self._open.get(key)
        if batch is not None and (
            batch.inputs + len(inputs) > limit or batch.estimate + estimate > self._max_tokens
        ):
            self._flush(key)
            batch = None
        if batch is None:
            batch = self._open[key] = _Batch(provider, deployment, dimensions)
            batch.timer = asyncio.get_running_loop().call_later(self._linger_s, self._flush, key)
        future: asyncio.Future[EmbeddingResponse] = asyncio.get_running_loop().create_future()
        batch.members.append(_Member(inputs, estimate, future))
        batch.inputs += len(inputs)
        batch.estimate += estimate
        if batch.inputs >= limit:
            self._flush(key)
        return await future

    def _flush(self, key: tuple[str, int | None]) -> None:
        batch = self._open.pop(key, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        task = asyncio.create_task(self._send(batch, batch.members))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: _Batch, members: Sequence[_Member]) -> None:
        members = [m for m in members if not m.future.done()]  # a cancelled job drops out
        if not members:
            return
        inputs = [text for member in members for text in member.inputs]
        call = EmbeddingCall(batch.deployment.model, inputs, batch.dimensions)
        limiter = self._limits[batch.deployment]
        try:
            reserve = sum(m.estimate for m in members)
            await _paced(limiter, reserve)
            self.requests += 1
            try:
                response = await batch.provider.embed(call)
            except ProviderError as error:
                pushed_back = error.retryable and error.status_code in (429, 503, 529)
                limiter.finished(reserve, None, pushed_back=pushed_back)
                raise
            limiter.finished(reserve, response.input_tokens, pushed_back=False)
        except PermanentProviderError as error:
            if len(members) == 1:
                _fail(members, error)
                return
            middle = len(members) // 2  # one bad input: find it, spare the others
            await asyncio.gather(
                self._send(batch, members[:middle]), self._send(batch, members[middle:])
            )
            return
        except BaseException as error:  # retryable, or cancelled: the same for every member
            _fail(members, error)
            if not isinstance(error, Exception):
                raise
            return
        _fan_out(members, response)

    async def aclose(self) -> None:
        """Send what is open and wait for every request in flight."""
        for key in list(self._open):
            self._flush(key)
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)


async def _paced(limiter: DeploymentLimiter, reserve: int) -> None:
    """Wait for the deployment's limits to admit one combined request, then start it."""
    # a bucket says exactly how long to wait; a full concurrency limit only that a call must
    # end, which the batcher learns by looking again shortly
    while (wait := limiter.wait_s(reserve)) > 0:  # noqa: ASYNC110
        await asyncio.sleep(wait if math.isfinite(wait) else PACE_POLL_S)
    limiter.start(reserve)


def _fail(members: Sequence[_Member], error: BaseException) -> None:
    for member in members:
        if not member.future.done():
            member.future.set_exception(error)


def _fan_out(members: Sequence[_Member], response: EmbeddingResponse) -> None:
    shares = split_tokens(response.input_tokens, [m.estimate for m in members])
    start = 0
    for member, share in zip(members, shares, strict=True):
        end = start + len(member.inputs)
        embeddings = response.embeddings[start:end]
        start = end
        if not member.future.done():
            member.future.set_result(
                EmbeddingResponse(embeddings, share, estimated=response.estimated)
            )


def split_tokens(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in proportion to ``weights``; the parts add up to ``total`` exactly."""
    if sum(weights) <= 0:
        weights = [1] * len(weights)
    weight_sum = sum(weights)
    exact = [total * w / weight_sum for w in weights]
    parts = [int(x) for x in exact]
    remainder = total - sum(parts)
    by_fraction = sorted(range(len(weights)), key=lambda i: exact[i] - parts[i], reverse=True)
    for i in by_fraction[:remainder]:
        parts[i] += 1
    return parts
