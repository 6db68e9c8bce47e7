"""Calling providers for one job: failover down the route's plan, retry rounds with backoff.

One *round* tries each deployment of the plan once, in order, skipping those whose limits
(rpm, tpm, adaptive concurrency: ``workers/calls/limits.py``) or health (open circuit, Retry-After
pause, too many calls in doubt: ``workers/calls/health.py``) refuse a call now. A retryable
failure moves on to the next deployment at once; a permanent one ends the job. When a round
ends without success, the retry policy waits (backoff with jitter, never less than the
shortest Retry-After seen) and runs another, within its attempt and time budget. ``attempts``
counts every provider call made.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from broker.config import DeploymentConfig
from broker.errors import (
    DeploymentsUnavailable,
    ProviderBadRequest,
    ProviderContentFiltered,
    ProviderError,
    ProviderInvalidOutput,
    ProviderOverloaded,
    ProviderRateLimited,
    UncheckableOutput,
)
from schemas.jobs import JobKind, JobRequest
from workers.calls import tokens
from workers.calls.health import DeploymentHealth, HealthBoard
from workers.calls.limits import DeploymentLimiter
from workers.calls.microbatch import MicroBatcher
from workers.calls.retry import RetryPolicy
from workers.calls.routing import DeploymentState
from workers.calls.slots import CallSlots
from workers.content import structured
from workers.providers.base import ChatCall, Provider, WireMessages
from workers.providers.requests import (
    Execution,
    ProviderCall,
    embedding_output,
    provider_call,
)

#: (provider, model, outcome: "ok" or the error's class name, seconds) of each provider call
CallObserver = Callable[[str, str, str, float, bool], None]  # …, seconds, a retry?
ROOM_WAIT_S = 1.0  # longest wait for a deployment's calls in doubt to resolve before re-checking


@dataclass(frozen=True, slots=True)
class _Admitted:
    """A call both the deployment's health and its limiter have let through."""

    deployment: DeploymentConfig
    health: DeploymentHealth
    limiter: DeploymentLimiter | None  # None: the micro-batcher paces combined requests
    reserve: int


class Executor:
    def __init__(
        self,
        providers: dict[str, Provider],
        retry: RetryPolicy,
        deployments: DeploymentState,
        slots: CallSlots,
        micro_batcher: MicroBatcher,
        on_call: CallObserver | None,
    ) -> None:
        """``slots`` are taken by the pipeline (a call until its result is stored);
        ``batcher`` combines embedding calls of deployments with ``batch_embeddings``."""
        self._on_call = on_call
        self._providers = providers
        self._retry = retry
        self.slots = slots
        self.board = deployments.health
        self.calibration = deployments.calibration
        self.limits = deployments.limits
        self.pace = deployments.pace
        self.micro_batcher = micro_batcher

    async def execute(
        self,
        job: JobRequest,
        plan: list[DeploymentConfig],
        messages: WireMessages | None,
        billed: tokens.BilledInput,
        deadline: float | None = None,
        park_after_s: float | None = None,
        failover_on: Collection[str] = (),
        reasks: int = 1,
    ) -> Execution:
        """Run the job down ``plan``; the outcome (output or last error) is on the Execution.
        ``billed``: the job's billed input, what each deployment's tpm holds and what its
        reported usage teaches the calibration against.

        When a retryable failure asks for a wait longer than ``park_after_s``, or the retry
        budget ends on a retryable failure, the job is not failed: ``park_s`` says how long it
        should wait at least (the pipeline parks it, up to its park limit).
        ``failover_on`` (the route's): ``content_filter`` moves a job a deployment refused on
        content policy to the next one; otherwise the refusal ends it. ``reasks``: how many
        more answers to ask for when one fails the job's JSON schema (the batch lane, which
        already has one, asks for none).
        The caller holds one of :attr:`slots` (``workers/calls/slots.py``)."""
        execution = Execution(
            failover_on_filter="content_filter" in failover_on, reasks=reasks, billed=billed
        )
        try:
            await self._retry.call(
                lambda: self._round(job, plan, messages, execution),
                deadline=deadline,
                longest_wait_s=park_after_s,
            )
        except ProviderError as error:
            execution.error = error
            if error.retryable and park_after_s is not None:
                # a wait too long to sleep on, or the retry budget spent on errors that may
                # pass (a provider outage): park rather than fail; the pipeline bounds parks
                execution.park_s = max(error.retry_after or 0.0, park_after_s)
        return execution

    async def _round(
        self,
        job: JobRequest,
        plan: list[DeploymentConfig],
        messages: WireMessages | None,
        execution: Execution,
    ) -> None:
        """Each deployment once; returns on success, raises the error to retry on (or stop).

        When every deployment refuses only for now — its pace (rpm/tpm), its adaptive
        concurrency, calls in doubt, a probe out — the round waits instead of spending a retry."""
        plan = _unfiltered(plan, execution)  # refused on content policy: never asked again
        counts_tokens = any(d.tpm is not None for d in plan)
        raw_tokens = execution.input_estimate() if counts_tokens else 0
        while True:
            errors: list[ProviderError] = []
            paced: list[tuple[float, int, DeploymentConfig, int]] = []
            for index, deployment in enumerate(plan):
                reserve = self._reserve(job, deployment, raw_tokens)
                # a micro-batched deployment's limits count combined requests: the batcher's
                limiter = None if _batched(job, deployment) else self.limits[deployment]
                wait = limiter.wait_s(reserve) if limiter is not None else 0.0
                if wait == 0 and limiter is not None:
                    wait = await self._shared_wait(deployment, reserve)
                if wait > 0:
                    paced.append((wait, index, deployment, reserve))
                    continue
                if await self._try(job, deployment, limiter, reserve, messages, execution, errors):
                    return
            if execution.filtered:
                errors = [e for e in errors if not isinstance(e, ProviderContentFiltered)]
                plan = _unfiltered(plan, execution)
            if errors or not plan:
                raise _round_failure(errors, plan, self.board)
            soonest = min(self.board[d.key].available_at() for d in plan)
            if not paced and soonest > time.monotonic():  # circuits open or paused
                raise _round_failure(errors, plan, self.board)
            wait, _, deployment, reserve = min(paced, default=(math.inf, 0, plan[0], 0))
            if not math.isfinite(wait):  # a finished call, or a deployment's ramp, makes room
                ramp = min(self.board[d.key].ramp_grows_at() for d in plan) - time.monotonic()
                await self.board.wait_for_release(min(ROOM_WAIT_S, max(ramp, 0.0)))
                continue
            if await self._booked(job, deployment, reserve, messages, execution, errors):
                return
            if errors:
                raise _round_failure(errors, plan, self.board)

    async def _try(
        self,
        job: JobRequest,
        deployment: DeploymentConfig,
        limiter: DeploymentLimiter | None,
        reserve: int,
        messages: WireMessages | None,
        execution: Execution,
        errors: list[ProviderError],
    ) -> bool:
        """Call now if the deployment's health admits it; False when refused or failed."""
        health = self.board[deployment.key]
        if not health.try_acquire():
            if limiter is not None and self.pace is not None:
                self.pace.give_back(deployment, reserve)  # taken in _shared_wait
            return False
        if limiter is not None:
            limiter.start(reserve)
        call = _Admitted(deployment, health, limiter, reserve)
        return await self._attempt(job, call, messages, execution, errors)

    async def _shared_taken(self, deployment: DeploymentConfig, reserve: int) -> None:
        """Until the call's request and tokens are taken from the shared pace."""
        while True:
            wait = await self._shared_wait(deployment, reserve)
            if not wait:
                return
            await asyncio.sleep(wait)  # the other workers' calls took the pace

    async def _shared_wait(self, deployment: DeploymentConfig, reserve: int) -> float:
        """0 once the call's request and tokens are taken from the deployment's shared pace
        (every worker's), else how long until they can be."""
        if self.pace is None:
            return 0.0
        wait = await self.pace.take(deployment, reserve)
        return 0.0 if wait is None else max(wait, 0.001)

    async def _booked(
        self,
        job: JobRequest,
        deployment: DeploymentConfig,
        reserve: int,
        messages: WireMessages | None,
        execution: Execution,
        errors: list[ProviderError],
    ) -> bool:
        """Book the deployment's next slot at its pace, sleep until it comes, then call."""
        limiter = self.limits[deployment]
        try:
            await asyncio.sleep(limiter.book(reserve))
            await self._shared_taken(deployment, reserve)
        except BaseException:
            limiter.cancel(reserve)
            raise
        health = self.board[deployment.key]
        if not health.try_acquire():
            limiter.cancel(reserve)
            if self.pace is not None:
                self.pace.give_back(deployment, reserve)
            return False
        call = _Admitted(deployment, health, limiter, reserve)
        return await self._attempt(job, call, messages, execution, errors)

    def _reserve(self, job: JobRequest, deployment: DeploymentConfig, raw_tokens: int) -> int:
        """Tokens to hold against the deployment's tpm: calibrated input + the output cap."""
        if deployment.tpm is None:
            return 0  # nothing counts tokens for this deployment
        return self.calibration.estimate(deployment.key, raw_tokens) + tokens.output_allowance(job)

    async def _attempt(
        self,
        job: JobRequest,
        call: _Admitted,
        messages: WireMessages | None,
        execution: Execution,
        errors: list[ProviderError],
    ) -> bool:
        """One admitted call; True when it succeeded, False after a retryable failure."""
        execution.attempts += 1
        retry = execution.attempts > 1
        started = time.monotonic()
        health, limiter = call.health, call.limiter
        answered_before = len(execution.calls)
        try:
            await self._call(job, call.deployment, messages, execution)
        except ProviderError as error:
            self._observe(call.deployment, type(error).__name__, started, retry)
            pushed_back = isinstance(error, ProviderRateLimited | ProviderOverloaded)
            if limiter is not None:
                limiter.finished(call.reserve, None, pushed_back=pushed_back)
            if isinstance(error, ProviderRateLimited):
                health.rate_limited(error.retry_after)
            elif isinstance(error, ProviderContentFiltered) and execution.failover_on_filter:
                health.neutral()  # the content, not the deployment: on to the next one
                execution.filtered[call.deployment.key] = error
            elif error.retryable:
                health.failed()
            else:
                health.neutral()
                raise
            errors.append(error)
            return False
        except BaseException:
            if limiter is not None:
                limiter.finished(call.reserve, None, pushed_back=False)
            health.neutral()
            raise
        # every answer of this attempt (a JSON answer asked for again is two): what was used
        answered = execution.calls[answered_before:]
        used = sum(c.input_tokens + c.output_tokens for c in answered) if answered else None
        if limiter is not None:
            limiter.finished(call.reserve, used, pushed_back=False)
            if self.pace is not None:
                self.pace.settle(call.deployment, call.reserve, used)
        health.succeeded(time.monotonic() - started)
        self._observe(call.deployment, "ok", started, retry)
        return True

    def _observe(
        self, deployment: DeploymentConfig, outcome: str, started: float, retry: bool
    ) -> None:
        if self._on_call is not None:
            seconds = time.monotonic() - started
            self._on_call(deployment.provider, deployment.model, outcome, seconds, retry)

    async def _call(
        self,
        job: JobRequest,
        deployment: DeploymentConfig,
        messages: WireMessages | None,
        execution: Execution,
    ) -> None:
        provider = self._providers.get(deployment.provider)
        if provider is None:
            raise ProviderBadRequest(f"provider {deployment.provider!r} is not available")
        call = provider_call(job, deployment, messages)
        if isinstance(call, ChatCall):
            await self._chat(job, deployment, provider, call, execution)
            return
        if _batched(job, deployment):
            embedded = await self.micro_batcher.embed(
                provider, deployment, job.inputs, call.dimensions, job.route
            )
        else:
            embedded = await provider.embed(call)
        raw_estimate = execution.input_estimate()
        served = self._served(
            deployment, embedded.input_tokens, 0, embedded.estimated, raw_estimate
        )
        execution.calls.append(served)
        execution.served_by = served
        execution.output = embedding_output(job, embedded.embeddings)
        execution.error = None

    async def _chat(
        self,
        job: JobRequest,
        deployment: DeploymentConfig,
        provider: Provider,
        call: ChatCall,
        execution: Execution,
    ) -> None:
        """One chat call; an answer that fails the job's JSON schema is asked for once more on
        the same deployment (both calls are paid for), then fails ``invalid_output``."""
        schema = structured.expected(job.params.response_format) if job.params else None
        raw_estimate = execution.input_estimate()
        for asked in range(execution.reasks + 1):
            chat = await provider.chat(call)
            served = self._served(
                deployment, chat.input_tokens, chat.output_tokens, chat.estimated, raw_estimate
            )
            execution.calls.append(served)
            output = chat.output()
            if schema is not None:
                checked = await structured.checked_output(output, schema, tenant=job.tenant)
                if isinstance(checked, structured.Invalid):
                    if checked.unusable:  # the schema's fault: another answer cannot help
                        raise UncheckableOutput(
                            f"the answer could not be checked against response_format: "
                            f"{checked.reason}",
                            provider=deployment.provider,
                        )
                    if asked < execution.reasks:
                        continue
                    raise ProviderInvalidOutput(
                        f"the answer does not match response_format, asked twice: {checked.reason}",
                        provider=deployment.provider,
                    )
                output = checked
            execution.served_by = served
            execution.output = output
            execution.error = None
            return

    def _served(
        self,
        deployment: DeploymentConfig,
        tokens_in: int,
        tokens_out: int,
        estimated: bool,
        raw_estimate: int,
    ) -> ProviderCall:
        """A call the provider answered, costed, its token counts teaching the calibration."""
        if not estimated:
            self.calibration.observe(deployment.key, raw_estimate, tokens_in)
        return ProviderCall.answered(deployment, tokens_in, tokens_out, estimated)


def _batched(job: JobRequest, deployment: DeploymentConfig) -> bool:
    """Whether the job's inputs may share a call with other jobs' (not when it names its
    end user: one call carries one ``user``)."""
    if job.kind is not JobKind.EMBEDDING or not deployment.max_batch_inputs:
        return False
    return job.params is None or job.params.user is None


def _unfiltered(plan: list[DeploymentConfig], execution: Execution) -> list[DeploymentConfig]:
    """The plan without the deployments that refused the job on content policy; the last
    refusal when none is left."""
    if not execution.filtered:
        return plan
    left = [d for d in plan if d.key not in execution.filtered]
    if not left:
        raise list(execution.filtered.values())[-1]
    return left


def _round_failure(
    errors: list[ProviderError], plan: list[DeploymentConfig], board: HealthBoard
) -> ProviderError:
    """The error a failed round ends with: the one with the soonest Retry-After, or — when no
    deployment would take a call — how long until the first of them will."""
    if errors:
        waits = [e.retry_after for e in errors if e.retry_after is not None]
        if len(waits) < len(errors):  # some error asks for no particular wait: back off
            return next(e for e in reversed(errors) if e.retry_after is None)
        return min(errors, key=lambda e: e.retry_after or 0.0)
    now = time.monotonic()
    soonest = min(board[d.key].available_at() for d in plan) if plan else now
    return DeploymentsUnavailable(
        "no deployment of the route can take a call now (circuits open or paused)",
        retry_after=max(0.0, soonest - now) or None,
    )
