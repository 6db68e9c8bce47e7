"""Found by the fuzz campaign at full size: records on the control topic that aiokafka cannot
decode (a header name that is not UTF-8, which any client may write) pinned the control
follower — after stepping past one, its next search rewound to the first record not yet
applied, which was that same record, so two in a row (or one at the head of the topic) were
found again and again: a cancel written behind 40 of them was still not applied a minute
later, so a writer of the control topic could keep every cancel and budget set from applying."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from broker.config import development_config
from broker.settings import Settings
from tests.helpers import running_worker
from tests.hostile.producer import RawName, hostile_producer
from workers.devstack.simulator import SimulatorServer

UNDECODABLE = 40
#: a cancel applies at once when read; the follower's own refresh is every 2 s
APPLIED_WITHIN_S = 5.0


async def test_undecodable_control_records_do_not_hold_up_the_commands_behind_them(
    make_settings: Callable[..., Settings], sqlite_url: str, simulator: SimulatorServer
) -> None:
    settings = make_settings(database_url=sqlite_url)
    async with running_worker(settings, development_config(simulator.base_url)) as worker:
        async with hostile_producer(settings.kafka_bootstrap or "") as producer:
            for index in range(UNDECODABLE):
                cancel = {"action": "cancel", "tenant": "acme", "job_id": f"u-{index}"}
                await producer.send_and_wait(
                    settings.topics.control,
                    json.dumps(cancel).encode(),
                    headers=[(RawName(b"\xff\xfe"), b"v")],
                )
            last = {"action": "cancel", "tenant": "acme", "job_id": "after"}
            await producer.send_and_wait(settings.topics.control, json.dumps(last).encode())
            sent = time.monotonic()
        cancels = worker.cancellations
        while not cancels.is_cancelled("acme", "after", None):
            assert time.monotonic() - sent < 60, "the cancel behind them never applied"
            await asyncio.sleep(0.05)
        took = time.monotonic() - sent
    assert took < APPLIED_WITHIN_S, f"applied {took:.1f} s after it was written"
