"""The composition root: every part of a worker built once, from its settings and config.

Parts receive their collaborators and settings groups (``settings.retry``, ``.circuit``,
``.ledger`` …) whole; none builds another part or reads the environment. What owns a resource
(the database engine, the HTTP client, Kafka clients, the ledger writer) is entered on the
worker's exit stack here, so the worker closes them in reverse order when it drains.

The order below is the order of a job's path: intake buffers, the ledger, then the checks,
the calls and the endings that :class:`~workers.pipeline.job_pipeline.JobPipeline` takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener

from broker.config import HeadwayConfig
from broker.dlq import dlq_reader
from broker.dlq_lookup import KafkaLetters, LetterLookup
from broker.headers import RecordHeaders
from broker.kafka import consumer_options, producer_options
from broker.record_batches import RecordBatchSender
from broker.settings import Settings
from schemas.control import ControlCommand
from workers.admission.batch_caps import BatchCaps
from workers.admission.budget_alerts import AlertPublisher
from workers.admission.budget_gauges import BudgetGauges
from workers.admission.budgets import Budgets
from workers.admission.gate import Admission
from workers.admission.webhooks import posting
from workers.admission.webhooks.deliveries import AlertDeliveries
from workers.admission.webhooks.posting import Webhooks
from workers.admission.webhooks.transport import webhook_client
from workers.audit.facts import Auditor
from workers.batch_lane.lane import BatchLane
from workers.calls.executor import Executor
from workers.calls.health import HealthBoard
from workers.calls.limits import LimitBoard
from workers.calls.microbatch import MicroBatcher
from workers.calls.retry import RetryPolicy
from workers.calls.routing import DeploymentState, Router
from workers.calls.shared_pace import SharedPace
from workers.calls.slots import CallSlots
from workers.calls.tokens import Calibration
from workers.content.features import Capabilities
from workers.guardrails.screening import Guardrails
from workers.intake.fetching import Fetcher
from workers.intake.offsets import OffsetTracker
from workers.intake.parked import ParkedJobs
from workers.intake.scheduler import LaneScheduler
from workers.intake.spill import TAKE_MAX, Spill
from workers.ledger.database.engine import create_engine
from workers.ledger.quota_rows import QuotaLedger
from workers.ledger.repository import LedgerRepository
from workers.ledger.retention.pruner import Pruner
from workers.ledger.writer import LedgerWriter
from workers.pipeline.access import AccessControl
from workers.pipeline.cancellations import Authenticate, Cancellations, open_control_reader
from workers.pipeline.claimants import Claimants
from workers.pipeline.job_pipeline import JobPipeline
from workers.pipeline.parking import Parking
from workers.pipeline.parts import Calls, Checks, Endings, Telemetry
from workers.pipeline.preparation import Preparation
from workers.pipeline.replays import ReplayCheck
from workers.pipeline.response_cache import ResponseCache
from workers.providers.base import Provider
from workers.providers.batch_apis import BatchAPI
from workers.providers.http import create_http_client
from workers.providers.registry import build_batch_apis, build_providers
from workers.runtime.readiness import Readiness
from workers.settle.outcomes import result_topic
from workers.settle.poison import PoisonPath
from workers.settle.publisher import Publisher
from workers.settle.settlement import Settlement
from workers.templates.catalog import TemplateCatalog

log = logging.getLogger(__name__)

SHUTDOWN_KAFKA_S = 10.0  # longest wait for the final commit, and for each Kafka client to stop


@dataclass(frozen=True)
class Seams:
    """What a test (or a benchmark) may put in place of the real thing."""

    providers: dict[str, Provider] | None = None  # None: built from the config's providers
    retry: RetryPolicy | None = None  # None: RetryPolicy(settings.retry)
    clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class Buffers:
    """Between the fetch loop and the runners: the lane buffers, parked jobs, offsets."""

    scheduler: LaneScheduler
    parked: ParkedJobs
    tracker: OffsetTracker
    fetch_chunk: int  # records asked of the consumer at a time, per lane


@dataclass(frozen=True)
class Parts:
    """What a running worker holds on to; the job's path itself is ``pipeline``."""

    producer: AIOKafkaProducer
    ledger: LedgerWriter
    publisher: Publisher
    pipeline: JobPipeline
    control: AIOKafkaConsumer  # the control topic's reader, followed by its cancellations
    # what runs beside the jobs until the worker stops: the ledger's pruner (unless
    # ``prune_s`` = 0), the budgets' gauges and alerts
    background: tuple[Callable[[], Coroutine[Any, Any, None]], ...] = ()


def buffers(settings: Settings, config: HeadwayConfig) -> Buffers:
    """Each lane holds a third of the buffer, and never less than ``concurrency`` jobs."""
    group = settings.buffer
    per_lane_jobs = max(group.max_jobs // 3, settings.concurrency, 1)
    scheduler = LaneScheduler(
        per_lane_jobs,
        group.max_bytes // 3,
        weight=config.weight_of,
        aging_s=group.priority_aging_s,
    )
    chunk = max(per_lane_jobs // 2, 1)
    return Buffers(scheduler, ParkedJobs(per_lane_jobs), OffsetTracker(), chunk)


async def open_intake(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    config: HeadwayConfig,
    built: Buffers,
    listener: ConsumerRebalanceListener,
    spill: Spill | None,
) -> tuple[AIOKafkaConsumer, Fetcher]:
    """The worker's one consumer (the job lanes and the retry topic, in the worker group;
    ``listener`` hears its rebalances) and the fetcher that feeds the buffers from it (and
    ``spill``s what they cannot hold)."""
    topics = settings.topics
    consumer = AIOKafkaConsumer(**consumer_options(settings))
    consumer.subscribe([*topics.job_lanes, topics.retry], listener=listener)
    await consumer.start()
    stack.push_async_callback(bounded_stop, consumer.stop, "consumer")
    fetcher = Fetcher(
        consumer,
        topics,
        built.scheduler,
        built.parked,
        built.tracker,
        chunk=built.fetch_chunk,
        max_message_bytes=settings.max_message_bytes,
        account=config.account,
        spill=spill,
    )
    return consumer, fetcher


def spill_for(
    settings: Settings, config: HeadwayConfig, built: Buffers, ledger: LedgerWriter
) -> Spill | None:
    """Where a full lane's over-share jobs wait: the ledger (None: spilling is off)."""
    if not settings.buffer.spill:
        return None
    return Spill(
        ledger.run,
        built.scheduler,
        built.tracker,
        owner=settings.ledger.owner,
        lease_s=settings.ledger.lease_s,
        weight=config.weight_of,
        max_message_bytes=settings.max_message_bytes,
        refill_to=settings.concurrency + settings.runners_ahead + TAKE_MAX,
    )


async def wire(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    config: HeadwayConfig,
    *,
    readiness: Readiness,
    telemetry: Telemetry,
    on_free: Callable[[str], None],
    seams: Seams,
) -> Parts:
    """Open (and enter on ``stack``) what a worker's job path talks to — the database, the
    HTTP client, the producer, the DLQ and control readers — then build the path on them."""
    topics, group = settings.topics, settings.ledger
    # before anything opens: a webhook URL to a refused address is a config error
    hooks = posting.targets(config, os.environ, settings.webhooks.allow_private)
    engine = create_engine(group.database_url)
    stack.push_async_callback(engine.dispose)
    http = create_http_client(settings.http)
    telemetry.tracing.instrument(http)
    stack.push_async_callback(http.aclose)
    producer = AIOKafkaProducer(**producer_options(settings))
    await producer.start()
    stack.push_async_callback(bounded_stop, producer.stop, "producer")
    repository = LedgerRepository(group.owner, group.lease_s, seams.clock)
    writer = LedgerWriter(engine, repository, group, readiness)
    ledger = await stack.enter_async_context(writer)
    publisher = Publisher(
        RecordBatchSender(producer, settings.producer_linger_ms / 1000),
        topics,
        settings.max_message_bytes,
    )
    letters = KafkaLetters(topics.dlq, functools.partial(dlq_reader, settings))
    lookup = LetterLookup(await stack.enter_async_context(letters))
    stack.push_async_callback(lookup.close)
    replays = ReplayCheck(lookup, topics.dlq)
    providers = seams.providers if seams.providers is not None else build_providers(config, http)
    pipeline = job_path(
        settings,
        config,
        ledger=ledger,
        publisher=publisher,
        providers=providers,
        batch_apis=build_batch_apis(config, http),
        replays=replays,
        telemetry=telemetry,
        on_free=on_free,
        seams=seams,
    )
    control = await open_control_reader(settings)
    stack.push_async_callback(control.stop)
    background: list[Callable[[], Coroutine[Any, Any, None]]] = []
    retention = settings.retention
    if retention.prune_s > 0:
        pruner = Pruner(ledger.run, engine, retention, owner=group.owner, clock=seams.clock)
        background.append(pruner.run_forever)
    # budgets' gauges and alerts: always, as any batch may be given a cap at any time
    on_published = None
    if hooks:
        webhook_http = webhook_client()
        stack.push_async_callback(webhook_http.aclose)
        webhooks = Webhooks(hooks, webhook_http, seams.clock, settings.webhooks.timeout_s)
        deliveries = AlertDeliveries(
            ledger.run, webhooks, group.owner, seams.clock, settings.webhooks
        )
        on_published = deliveries.wake
        background.append(deliveries.run_forever)
    alerts = AlertPublisher(
        config, ledger.run, publisher.publish, topics, group.owner, seams.clock, on_published
    )
    gauges = BudgetGauges(config, ledger.run, seams.clock, alerts)
    telemetry.metrics.budget_gauges(spent=gauges.spent, remaining=gauges.remaining)
    background.append(functools.partial(gauges.run_forever, settings.budget_gauges_s))
    return Parts(producer, ledger, publisher, pipeline, control, tuple(background))


def job_path(
    settings: Settings,
    config: HeadwayConfig,
    *,
    ledger: LedgerWriter,
    publisher: Publisher,
    providers: dict[str, Provider],
    batch_apis: dict[str, BatchAPI],
    replays: ReplayCheck | None,
    telemetry: Telemetry,
    on_free: Callable[[str], None],
    seams: Seams,
) -> JobPipeline:
    """Every part of a job's path, built over a ledger and a publisher. Nothing here opens
    anything, so a test builds the same path over in-memory fakes (tests/fakes.py)."""
    topics, metrics, tracing = settings.topics, telemetry.metrics, telemetry.tracing
    owner, lease_s = settings.ledger.owner, settings.ledger.lease_s

    # checks: may the job run, and how
    access = AccessControl(config)
    caps = BatchCaps(ledger.run, seams.clock)
    cancellations = Cancellations(
        ledger.run, seams.clock, cancel_authenticator(config, access), caps, metrics.control_skipped
    )
    guardrails = Guardrails(config, metrics.guardrail)
    capabilities = Capabilities(config)
    preparation = Preparation(config, access, TemplateCatalog(ledger.run), guardrails, capabilities)

    # calls: which deployment, and calling it
    deployments = DeploymentState(
        HealthBoard(settings.circuit),
        LimitBoard(settings.concurrency),
        Calibration(),
        SharedPace(ledger.run, QuotaLedger(), seams.clock),
    )
    executor = Executor(
        providers,
        seams.retry if seams.retry is not None else RetryPolicy(settings.retry),
        deployments,
        CallSlots(settings.concurrency),
        MicroBatcher(deployments.limits, settings.embed),
        metrics.provider_call,
    )
    router = Router(deployments, capabilities=capabilities)
    admission = Admission(
        ledger.run,
        Budgets(router, ledger.run, owner, lease_s, seams.clock, config.teams),
        owner,
        lease_s,
        clock=seams.clock,
        on_free=on_free,
        account=config.account,
    )
    checks = Checks(
        preparation,
        cancellations,
        replays,
        ResponseCache(ledger.run),
        admission,
        Claimants(),
        Auditor(config, access.key_ids),
    )

    # endings: settled, parked, dead-lettered, or handed to the provider Batch-API lane
    settlement = Settlement(
        ledger,
        publisher,
        topics,
        metrics,
        tracing,
        max_result_bytes=settings.max_message_bytes,
        fallback_topic=lambda tenant: result_topic(None, config.tenant(tenant), topics),
    )
    batch_lane = None
    if batch_apis:
        batch_lane = BatchLane(
            config,
            batch_apis,
            ledger.run,
            settlement,
            preparation,
            owner,
            settings.batch_lane,
            cancellations,
            executor,
        )
    endings = Endings(
        settlement,
        Parking(publisher, ledger, metrics, settings.retry),
        PoisonPath(config, topics, publisher, settlement, access),
        batch_lane,
    )
    calls = Calls(router, executor, settings.retry)
    return JobPipeline(
        config, topics, ledger, checks, calls, endings, telemetry, settings.max_message_bytes
    )


def cancel_authenticator(config: HeadwayConfig, access: AccessControl) -> Authenticate:
    """Why a control command may not act for its tenant (None: it may): a tenant with
    ``require_signed_control`` (or ``require_signed_cancels``) accepts only commands — cancels
    and budget sets — signed with its key."""

    def refusal(command: ControlCommand, value: bytes, headers: RecordHeaders) -> str | None:
        tenant = config.tenant(command.tenant)
        if tenant is None or not tenant.signed_control:
            return None
        refused = access.authenticate(command.tenant, tenant, value, headers)
        return None if refused is None else refused.message

    return refusal


async def bounded_stop(stop: Callable[[], Awaitable[None]], what: str) -> None:
    """Stop a Kafka client, or give up waiting after ``SHUTDOWN_KAFKA_S``."""
    try:
        async with asyncio.timeout(SHUTDOWN_KAFKA_S):
            await stop()
    except TimeoutError:
        log.warning(
            "the Kafka %s did not stop within %.0fs; exiting anyway", what, SHUTDOWN_KAFKA_S
        )
