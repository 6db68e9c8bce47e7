"""Apache Kafka for the tests: one or three KRaft nodes on free loopback ports, from the jars
that ``deploy/dev/kafka.sh fetch`` copies out of Maven Central into ``build/kafka/libs``.

Every node is a combined broker and controller (the shape of a small production cluster), with
a bounded heap, its own data directory and log file. With three nodes the cluster runs as
production would: replication factor 3, ``min.insync.replicas = 2``, and a three-voter
controller quorum, so one broker — or the active controller — can be killed and restarted.

    with ApacheKafkaCluster(brokers=3) as cluster:
        cluster.bootstrap                      # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
        cluster.kill(2); cluster.restart(2)    # SIGKILL, then the same node back on its ports

A developer starts one by hand with ``python -m tests.apache_kafka --brokers 3``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from aiokafka.admin import AIOKafkaAdminClient

from broker.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
LIBS = ROOT / "build" / "kafka" / "libs"
FETCH = ROOT / "deploy" / "dev" / "kafka.sh"
LOG4J = ROOT / "deploy" / "dev" / "kafka" / "log4j2.properties"
HEAP = "-Xmx512m"
READY_TIMEOUT_S = 90.0
ACTIVE_CONTROLLER = re.compile(
    r"\[QuorumController id=(\d+)\] Becoming the active controller at epoch (\d+)"
)


class KafkaUnavailable(RuntimeError):
    """This machine cannot run Apache Kafka (no Java, no Maven, no jars): the reason, one line."""


@functools.cache
def ensure_libs() -> Path:
    """The broker's class path folder, fetched from Maven Central when missing or stale."""
    if shutil.which("java") is None:
        raise KafkaUnavailable("Apache Kafka tier needs `java` on PATH (Java 17+)")
    done = subprocess.run([str(FETCH), "fetch"], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (LIBS / ".complete").exists():
        reason = done.stderr.strip().splitlines()[-1:] or ["no jars"]
        raise KafkaUnavailable(f"deploy/dev/kafka.sh fetch failed: {reason[0]}")
    return LIBS


def cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class Node:
    node_id: int
    port: int
    controller_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    wanted: bool = False  # started and not killed on purpose: an exit is a failure

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class ApacheKafkaCluster:
    """Owns ``brokers`` Apache Kafka processes in KRaft combined mode (see the module doc)."""

    def __init__(self, brokers: int = 1, *, workdir: Path | None = None) -> None:
        if brokers < 1:
            raise ValueError("brokers must be at least 1")
        self.size = brokers
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="headway-kafka-"))
        self.cluster_id = cluster_id()
        self.nodes = {
            n: Node(n, free_port(), free_port(), self.workdir / f"node-{n}")
            for n in range(1, brokers + 1)
        }

    @property
    def bootstrap(self) -> str:
        return ",".join(node.address for node in self.nodes.values())

    @property
    def replication_factor(self) -> int:
        return min(3, self.size)

    @property
    def min_insync_replicas(self) -> int:
        return 2 if self.size >= 3 else 1

    def properties(self, node: Node) -> str:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes.values())
        rf = self.replication_factor
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={node.node_id}",
                f"listeners=PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{node.port}",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                f"controller.quorum.voters={voters}",
                f"log.dirs={node.directory / 'data'}",
                # as production: topics exist because `headway topics create` made them
                "auto.create.topics.enable=false",
                f"default.replication.factor={rf}",
                f"min.insync.replicas={self.min_insync_replicas}",
                f"offsets.topic.replication.factor={rf}",
                "offsets.topic.num.partitions=10",
                f"transaction.state.log.replication.factor={rf}",
                f"transaction.state.log.min.isr={self.min_insync_replicas}",
                "transaction.state.log.num.partitions=4",
                "group.initial.rebalance.delay.ms=0",
                # small machines: few threads per broker
                "num.network.threads=2",
                "num.io.threads=4",
                "background.threads=2",
                "num.recovery.threads.per.data.dir=1",
                "log.cleaner.threads=1",
                "",
            ]
        )

    def _java(self, *args: str) -> list[str]:
        java = shutil.which("java") or "java"
        return [
            java,
            HEAP,
            "-Xms64m",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J}",
            "-cp",
            f"{ensure_libs()}/*",
            *args,
        ]

    def _format(self, node: Node) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        config = node.directory / "server.properties"
        config.write_text(self.properties(node))
        command = self._java("kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster_id}")
        done = subprocess.run(
            [*command, "-c", str(config)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise KafkaUnavailable(
                f"formatting node {node.node_id} failed: {done.stdout}{done.stderr}"
            )

    def _launch(self, node: Node) -> None:
        with node.log.open("ab") as log:
            node.process = subprocess.Popen(
                self._java("kafka.Kafka", str(node.directory / "server.properties")),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the test run reaches pytest, not the broker
            )
        node.wanted = True

    def start(self) -> None:
        """Format and start every node, then wait until all brokers are registered."""
        ensure_libs()
        for node in self.nodes.values():
            self._format(node)
        for node in self.nodes.values():
            self._launch(node)
        self.wait_ready()

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until every running node serves and the cluster lists them all as brokers."""
        asyncio.run(self.ready(timeout_s))

    async def ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Return once every running node serves clients and the cluster's metadata lists them
        all (a restarted node counts once it serves on its own port again)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for node in self.nodes.values():
                if node.process is not None and node.process.poll() is not None and node.wanted:
                    raise KafkaUnavailable(
                        f"node {node.node_id} exited with {node.process.returncode}:\n"
                        + self.log_tail(node)
                    )
            running = [node for node in self.nodes.values() if node.alive]
            serving = [await self._brokers_seen_by(node) for node in running]
            if running and all(seen >= len(running) for seen in serving):
                return
            await asyncio.sleep(0.2)
        raise KafkaUnavailable(
            f"Apache Kafka did not serve with {self.size} brokers in {timeout_s:.0f} s:\n"
            + self.log_tails()
        )

    @staticmethod
    async def _brokers_seen_by(node: Node) -> int:
        """How many brokers ``node`` lists in its metadata (0: it does not serve yet)."""
        try:  # a TCP probe first keeps aiokafka from logging refused connections
            _, writer = await asyncio.open_connection("127.0.0.1", node.port)
            writer.close()
        except OSError:
            return 0
        admin = AIOKafkaAdminClient(bootstrap_servers=node.address, request_timeout_ms=2000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            return len(cluster.get("brokers", []))
        except Exception:  # not serving yet
            return 0
        finally:
            await admin.close()

    async def partition_leaders(self, topics: list[str]) -> dict[int, int]:
        """Broker id → how many partitions of ``topics`` it leads now."""
        live = ",".join(n.address for n in self.nodes.values() if n.alive)
        admin = AIOKafkaAdminClient(bootstrap_servers=live, request_timeout_ms=5000)
        await admin.start()
        try:
            counts: dict[int, int] = {}
            for topic in await admin.describe_topics(topics):
                for partition in topic["partitions"]:
                    counts[partition["leader"]] = counts.get(partition["leader"], 0) + 1
            return counts
        finally:
            await admin.close()

    def active_controller(self) -> int:
        """The node id of the active KRaft controller, from the nodes' own logs."""
        best: tuple[int, int] | None = None  # (epoch, node id)
        for node in self.nodes.values():
            if not node.alive or not node.log.exists():
                continue
            for match in ACTIVE_CONTROLLER.finditer(node.log.read_text(errors="replace")):
                candidate = (int(match.group(2)), int(match.group(1)))
                best = candidate if best is None or candidate > best else best
        if best is None:
            raise KafkaUnavailable("no node has logged becoming the active controller")
        return best[1]

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: no controlled shutdown, as when a machine dies."""
        node = self.nodes[node_id]
        node.wanted = False
        if node.process is not None and node.alive:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait(30)

    def restart(self, node_id: int) -> None:
        """Start a stopped node again on its ports and data (it rejoins and catches up)."""
        node = self.nodes[node_id]
        if node.alive:
            raise RuntimeError(f"node {node_id} is running")
        self._launch(node)

    def log_tail(self, node: Node, lines: int = 30) -> str:
        try:
            return "\n".join(node.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_tails(self) -> str:
        return "\n".join(f"--- node {n.node_id}\n{self.log_tail(n)}" for n in self.nodes.values())

    def stop(self) -> None:
        """Kill every node (the data is thrown away: no controlled shutdown needed)."""
        for node in self.nodes.values():
            self.kill(node.node_id)
        if self._own_workdir and not os.environ.get("HEADWAY_KEEP_KAFKA"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ApacheKafkaCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Apache Kafka (KRaft) on loopback until Ctrl-C")
    parser.add_argument("--brokers", type=int, default=1, choices=(1, 3))
    args = parser.parse_args()
    with ApacheKafkaCluster(args.brokers) as cluster:
        print(f"HEADWAY_KAFKA_BOOTSTRAP={cluster.bootstrap}  (logs under {cluster.workdir})")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
