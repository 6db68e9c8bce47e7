"""The ``headway`` command line (CONTRACT §8). Each command is a thin shell over a module."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import typer
from aiokafka.errors import KafkaConnectionError
from pydantic import ValidationError

from broker.admin import create_topics
from broker.config import HeadwayConfig, load_config
from broker.errors import HeadwayError
from broker.settings import Settings
from workers.cli.batches import register as register_batch_commands
from workers.cli.dlq import dlq_app
from workers.cli.ledger import audit, ledger_app
from workers.cli.support import console, err, shown
from workers.cli.support import load_settings as _settings
from workers.cli.templates import templates_app
from workers.ledger.database.engine import upgrade
from workers.runtime.diagnostics import install_stack_dump
from workers.telemetry.logs import configure_logging, redact_secrets

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="headway — Kafka-based AI job broker"
)
topics_app = typer.Typer(no_args_is_help=True, help="Kafka topics")
db_app = typer.Typer(no_args_is_help=True, help="the ledger database")
app.add_typer(topics_app, name="topics")
app.add_typer(db_app, name="db")
app.add_typer(dlq_app, name="dlq")
app.add_typer(ledger_app, name="ledger")
app.add_typer(templates_app, name="templates")
app.command()(audit)
T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT/SIGTERM set ``stop`` — installed first thing, so a signal that arrives while
    the process is still starting stops it cleanly once started (drained, exit 0)."""
    loop = asyncio.get_running_loop()

    def stopping(sig: signal.Signals) -> None:
        if not stop.is_set():
            logging.getLogger("headway").info("%s received: stopping", sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping, sig)
    install_stack_dump(loop)


class _StoppedWhileStarting(Exception):
    pass


async def _unless_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T:
    """Run ``work``; a stop signal meanwhile cancels it (a start stuck on an unreachable
    broker or database must not make SIGTERM wait)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise _StoppedWhileStarting
    return task.result()


async def _until_signal(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
    _stop_on_signals(stop)
    await work


@app.command()
def demo(
    limit: Annotated[int | None, typer.Option(help="documents to use (default all)")] = None,
) -> None:
    """Embedded broker + SQLite + simulator + a worker: the bundled backfill, with a summary."""
    from workers.devstack.demo import run_demo

    _run(run_demo(_settings(), console, limit))


@app.command()
def dev(concurrency: Annotated[int | None, typer.Option(min=1)] = None) -> None:
    """The embedded stack with a worker, running until Ctrl-C."""
    from workers.devstack.stack import embedded_stack
    from workers.runtime.worker import Worker
    from workers.telemetry.tracing import Tracing

    settings = _settings()
    if concurrency:
        settings = settings.model_copy(update={"concurrency": concurrency})

    async def main() -> None:
        stop = asyncio.Event()
        async with embedded_stack(settings) as stack:
            console.print(
                f"bootstrap: [bold]{stack.settings.kafka_bootstrap}[/]  "
                f"simulator: {stack.simulator_url}"
            )
            console.print(f"export HEADWAY_KAFKA_BOOTSTRAP={stack.settings.kafka_bootstrap}")
            _secrets_out_of_logs(stack.config)
            tracing = Tracing.from_env(os.environ, default_exporter="console")
            try:
                async with Worker(stack.settings, stack.config, tracing=tracing) as worker:
                    await _until_signal(worker.run(stop), stop)
            finally:
                tracing.close()

    _run(main())


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="in-flight jobs (HEADWAY_CONCURRENCY)")
    ] = None,
    embedded: Annotated[
        bool, typer.Option(help="start an embedded broker when no bootstrap is set")
    ] = False,
    http_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="/healthz, /readyz (HEADWAY_HTTP_PORT)")
    ] = None,
) -> None:
    """One worker process."""
    from broker.embedded import EmbeddedKafka
    from workers.runtime.worker import Worker
    from workers.telemetry.tracing import Tracing

    settings = _settings()
    if concurrency:
        settings = settings.model_copy(update={"concurrency": concurrency})
    if http_port is not None:
        settings = settings.model_copy(update={"http_port": http_port})
    if not settings.kafka_bootstrap and not embedded:
        raise HeadwayError("HEADWAY_KAFKA_BOOTSTRAP is not set; set it, or pass --embedded")
    tracing = Tracing.from_env(os.environ)  # OTEL_TRACES_EXPORTER=otlp|console; off by default

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        nonlocal settings
        kafka = EmbeddedKafka() if not settings.kafka_bootstrap else None
        if kafka is not None:
            await kafka.__aenter__()
            settings = settings.model_copy(update={"kafka_bootstrap": kafka.bootstrap})
            console.print(f"embedded broker at {kafka.bootstrap}")
        try:
            config = load_config(settings.config)
            _secrets_out_of_logs(config)
            if not settings.config.exists():
                logging.getLogger("headway").warning(
                    "no config file at %s: using the built-in development config "
                    "(the simulator at its default address); set HEADWAY_CONFIG",
                    settings.config,
                )
            await _unless_stopped(create_topics(settings, config), stop)
            running = await _unless_stopped(
                Worker(settings, config, tracing=tracing).__aenter__(), stop
            )
            try:
                console.print(f"worker {settings.worker_id}: concurrency {settings.concurrency}")
                await running.run(stop)
            finally:
                await running.__aexit__(None, None, None)
        except _StoppedWhileStarting:
            logging.getLogger("headway").info("stopped before the worker had started")
        finally:
            tracing.close()
            if kafka is not None:
                kafka.stop()

    _run(main())


register_batch_commands(app)  # submit, results, status, cancel, usage: after worker in --help


@topics_app.command("create")
def topics_create() -> None:
    """Create every headway topic (idempotent); report existing ones that fall short."""
    settings = _settings()
    report = _run(create_topics(settings, load_config(settings.config)))
    replicas = (
        f"replication {report.replication_factor}, min.insync.replicas {report.min_insync_replicas}"
    )
    created = report.created
    console.print(
        f"created {len(created)} topics ({replicas}): {shown(', '.join(created))}"
        if created
        else "all topics exist"
    )
    for shortfall in report.shortfalls:
        err.print(f"warning: {shown(shortfall)}")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the ledger's Alembic migrations."""
    settings = _settings()
    _run(upgrade(settings.database_url, revision))
    console.print(f"ledger at {shown(settings.database_url)} is at {shown(revision)}")


@app.command()
def top(
    url: Annotated[
        list[str] | None,
        typer.Option(help="a worker's HTTP address (repeat for each); default this host's"),
    ] = None,
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between refreshes")] = 2.0,
    frames: Annotated[int | None, typer.Option(min=1, help="stop after this many")] = None,
) -> None:
    """A live view of the workers: throughput, lag per lane, in flight, spend per tenant."""
    from workers.cli.top import run_top

    settings = _settings()
    urls = url or [f"http://127.0.0.1:{settings.http_port or 9100}"]
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one leaves it
        _run(run_top(urls, console, interval, frames))


@app.command()
def docs(
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    print_only: Annotated[
        bool, typer.Option("--print", help="write the AsyncAPI YAML to stdout and exit")
    ] = False,
) -> None:
    """Serve the AsyncAPI document of the topics (HEADWAY_TOPIC_PREFIX) until Ctrl-C."""
    from broker.docs_site import DocsSite

    settings = _settings()
    if print_only:
        import yaml

        from broker.asyncapi import specification

        document = specification(settings).to_jsonable()
        sys.stdout.write(yaml.safe_dump(document, sort_keys=True, allow_unicode=True, width=100))
        return

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        async with DocsSite(settings, host, port) as site:
            console.print(f"AsyncAPI: [bold]{site.url}[/]  ({site.url}asyncapi.yaml)")
            await stop.wait()

    _run(main())


@app.command()
def simulator(
    port: Annotated[int, typer.Option()] = 8089,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    latency_ms: Annotated[float, typer.Option(min=0)] = 0.0,
    jitter_ms: Annotated[float, typer.Option(min=0)] = 0.0,
    error_rate: Annotated[float, typer.Option(min=0, max=1)] = 0.0,
    rpm: Annotated[int | None, typer.Option(min=1)] = None,
    error_status: Annotated[int, typer.Option(min=500, max=599)] = 500,
    omit_usage: Annotated[bool, typer.Option()] = False,
) -> None:
    """A provider simulator: OpenAI, Azure OpenAI, Anthropic and Gemini wire formats."""
    from workers.devstack.simulator.run import serve
    from workers.devstack.simulator.server import (
        SimulatorConfig,  # aiohttp's server: only when asked
    )

    config = SimulatorConfig(
        latency_ms=latency_ms,
        latency_jitter_ms=jitter_ms,
        error_rate=error_rate,
        rpm=rpm,
        error_status=error_status,
        omit_usage=omit_usage,
    )
    _run(serve(config, host, port))


def _configure_logging() -> None:
    try:
        settings = Settings()
    except ValidationError:  # the command itself reports the bad setting
        configure_logging()
    else:
        configure_logging(settings.log_format, settings.log_level)


def _secrets_out_of_logs(config: HeadwayConfig) -> None:
    redact_secrets(os.environ[name] for name in config.secret_env_names() if name in os.environ)


def main(argv: list[str] | None = None) -> None:
    _configure_logging()
    try:
        code = app(args=argv, standalone_mode=False)  # a command's typer.Exit(n) returns n
    except HeadwayError as error:
        err.print(f"[red]error:[/] {shown(error)}")
        sys.exit(2)
    except KafkaConnectionError as error:
        where = os.environ.get("HEADWAY_KAFKA_BOOTSTRAP", "the bootstrap address")
        err.print(f"[red]error:[/] cannot reach Kafka at {shown(where)}: {shown(error)}")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as error:  # click's usage errors carry their own exit code
        show = getattr(error, "show", None)
        if show is None:
            raise
        show()
        sys.exit(getattr(error, "exit_code", 2))
    if isinstance(code, int) and code:
        sys.exit(code)
