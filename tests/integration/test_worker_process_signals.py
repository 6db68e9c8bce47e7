"""A worker process answers signals at any stage: SIGTERM while it cannot even reach its
broker stops it at once; SIGUSR1 writes every task's stack to its log and it keeps running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.chaos.processes import wait_until_catching


def spawn(tmp_path: Path, log: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "HEADWAY_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
        "HEADWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/w.db",
        "HEADWAY_CONFIG": "/nonexistent/headway.toml",
        "HEADWAY_LOG_FORMAT": "text",
    }
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "workers", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


def wait_for_text(log: Path, text: str, timeout_s: float = 20.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the log:\n{log.read_text(errors='replace')[-3000:]}")


def test_sigterm_stops_a_worker_still_waiting_for_its_broker(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    process = spawn(tmp_path, log, silent.getsockname()[1])
    try:
        wait_until_catching(process, signal.SIGUSR1)
        time.sleep(1)  # starting: its Kafka clients wait for an answer that never comes
        assert process.poll() is None
        process.send_signal(signal.SIGUSR1)
        dumped = wait_for_text(log, "task dump on SIGUSR1")
        assert "asyncio tasks" in dumped and process.poll() is None
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(15)
        took = time.monotonic() - sent
    finally:
        silent.close()
        if process.poll() is None:
            process.kill()
    assert code == 0, log.read_text(errors="replace")[-3000:]
    assert took < 10, took
    assert "SIGTERM received: stopping" in log.read_text()


def test_a_broker_nobody_serves_is_named_in_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: connections are refused
    log = tmp_path / "worker.log"
    process = spawn(tmp_path, log, port)
    code = process.wait(60)
    said = log.read_text(errors="replace")
    assert code == 2, said
    assert f"cannot reach Kafka at 127.0.0.1:{port}" in said
    assert "Traceback" not in said
