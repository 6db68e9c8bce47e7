"""Embedding micro-batching: many single jobs, one provider request.

Embedding jobs for the same deployment (and output dimensions) join an open batch; it is
sent when it holds ``max_batch_inputs`` inputs, when the next job would push it past the
per-request token cap, or when no job has joined for ``linger_s`` (≈20 ms) — longer while
more jobs of its route are known to be on their way (in their ledger claim), but never more
than ``MAX_LINGER_FACTOR`` lingers after it opened. Each job gets its own
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
import collections
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from broker.config import DeploymentConfig
from broker.errors import PermanentProviderError, ProviderError
from broker.settings import EmbedSettings
from workers.calls import tokens
from workers.calls.limits import DeploymentLimiter, LimitBoard
from workers.providers.base import EmbeddingCall, EmbeddingResponse, Provider

PACE_POLL_S = 0.05
MAX_LINGER_FACTOR = 10


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
    opened: float
    members: list[_Member] = field(default_factory=list)
    inputs: int = 0
    estimate: int = 0
    timer: asyncio.TimerHandle | None = None
    started: bool = False  # on its way: waiting for the deployment's pace, then sent
    routes: set[str] = field(default_factory=set)


class MicroBatcher:
    def __init__(
        self,
        limits: LimitBoard,
        settings: EmbedSettings,
    ) -> None:
        """``settings.max_batch_tokens``: 250,000 by default, under OpenAI's 300k tokens per
        embeddings request."""
        self._limits = limits
        self._linger_s = settings.linger_s
        self._max_linger_s = settings.linger_s * MAX_LINGER_FACTOR
        self._max_tokens = settings.max_batch_tokens
        self._open: dict[tuple[str, int | None], _Batch] = {}
        self._expected: collections.Counter[str] = collections.Counter()
        self._sending: set[asyncio.Task[None]] = set()
        self.requests = 0  # combined provider requests sent

    async def embed(
        self,
        provider: Provider,
        deployment: DeploymentConfig,
        inputs: list[str],
        dimensions: int | None,
        route: str = "",
    ) -> EmbeddingResponse:
        """This job's embeddings, from a request it may share with other jobs."""
        limit = deployment.max_batch_inputs or 1
        estimate = tokens.inputs_tokens(inputs)
        key = (deployment.key, dimensions)
        loop = asyncio.get_running_loop()
        batch = self._open.get(key)
        if batch is not None and (
            batch.inputs + len(inputs) > limit or batch.estimate + estimate > self._max_tokens
        ):
            self._seal(key)
            batch = None
        if batch is None:
            batch = self._open[key] = _Batch(provider, deployment, dimensions, opened=loop.time())
        future: asyncio.Future[EmbeddingResponse] = loop.create_future()
        batch.members.append(_Member(inputs, estimate, future))
        batch.routes.add(route)
        batch.inputs += len(inputs)
        batch.estimate += estimate
        if batch.inputs >= limit:
            self._seal(key)
        elif not batch.started:
            self._linger(batch, loop)
        return await future

    def _linger(self, batch: _Batch, loop: asyncio.AbstractEventLoop) -> None:
        """(Re)arm the linger: from the latest join, never past MAX_LINGER_FACTOR lingers."""
        if batch.timer is not None:
            batch.timer.cancel()
        flush_at = min(loop.time() + self._linger_s, batch.opened + self._max_linger_s)
        batch.timer = loop.call_at(flush_at, self._lingered, batch)

    def _lingered(self, batch: _Batch) -> None:
        """The linger is over: send — unless jobs of its routes are on their way (between
        intake and here, typically in a ledger claim) and the batch may still wait."""
        loop = asyncio.get_running_loop()
        if loop.time() < batch.opened + self._max_linger_s and any(
            self._expected[route] for route in batch.routes
        ):
            batch.timer = loop.call_at(
                min(loop.time() + self._linger_s, batch.opened + self._max_linger_s),
                self._lingered,
                batch,
            )
            return
        self._start(batch)

    def expect(self, route: str) -> None:
        """An embedding job of ``route`` is on its way (intake, claim): a partial batch of the
        route may wait for it."""
        self._expected[route] += 1

    def arrived(self, route: str) -> None:
        """…and is here now (or will not come)."""
        self._expected[route] -= 1

    def _seal(self, key: tuple[str, int | None]) -> None:
        """No more joiners (full, or the next job would overflow it): send it."""
        batch = self._open.pop(key, None)
        if batch is not None:
            self._start(batch)

    def _start(self, batch: _Batch) -> None:
        """Send the batch when the deployment's pace allows; until then, jobs may still join
        (under an rpm limit a request slot is worth filling)."""
        if batch.started:
            return
        batch.started = True
        if batch.timer is not None:
            batch.timer.cancel()
        task = asyncio.create_task(self._send_when_paced(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send_when_paced(self, batch: _Batch) -> None:
        limiter = self._limits[batch.deployment]
        reserve = await _paced(limiter, batch.estimate)
        key = (batch.deployment.key, batch.dimensions)
        if self._open.get(key) is batch:
            del self._open[key]  # the slot has come: sealed
        await self._send(batch, batch.members, reserve)

    async def _send(self, batch: _Batch, members: Sequence[_Member], reserve: int | None) -> None:
        """One combined request for ``members`` (``reserve``: its booked limiter slot, or None
        to book one first)."""
        limiter = self._limits[batch.deployment]
        members = [m for m in members if not m.future.done()]  # a cancelled job drops out
        if not members:
            if reserve is not None:
                limiter.cancel(reserve)
            return
        try:
            if reserve is None:
                reserve = await _paced(limiter, sum(m.estimate for m in members))
            response = await self._request(batch, members, limiter, reserve)
        except PermanentProviderError as error:
            if len(members) == 1:
                _fail(members, error)
                return
            middle = len(members) // 2  # one bad input: find it, spare the others
            await asyncio.gather(
                self._send(batch, members[:middle], None), self._send(batch, members[middle:], None)
            )
            return
        except BaseException as error:  # retryable, or cancelled: the same for every member
            _fail(members, error)
            if not isinstance(error, Exception):
                raise
            return
        _fan_out(members, response)

    async def _request(
        self,
        batch: _Batch,
        members: Sequence[_Member],
        limiter: DeploymentLimiter,
        reserve: int,
    ) -> EmbeddingResponse:
        inputs = [text for member in members for text in member.inputs]
        self.requests += 1
        try:
            response = await batch.provider.embed(
                EmbeddingCall(batch.deployment.model, inputs, batch.dimensions)
            )
        except ProviderError as error:
            pushed_back = error.retryable and error.status_code in (429, 503, 529)
            limiter.finished(reserve, None, pushed_back=pushed_back)
            raise
        except BaseException:
            limiter.finished(reserve, None, pushed_back=False)
            raise
        limiter.finished(reserve, response.input_tokens, pushed_back=False)
        return response

    async def aclose(self) -> None:
        """Send what is open and wait for every request in flight."""
        for key in list(self._open):
            self._seal(key)
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)


async def _paced(limiter: DeploymentLimiter, reserve: int) -> int:
    """Book one combined request with the deployment's limits and wait for its slot."""
    # a full concurrency limit only says a call must end first: look again shortly
    while not math.isfinite(limiter.wait_s(reserve)):  # noqa: ASYNC110
        await asyncio.sleep(PACE_POLL_S)
    try:
        await asyncio.sleep(limiter.book(reserve))
    except BaseException:
        limiter.cancel(reserve)
        raise
    return reserve


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
