"""Access control over the real broker: signed jobs, reply-topic allowlists, and secrets that
never leak into results, dead letters or logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer

from broker.client import HeadwayClient, sign
from broker.config import HeadwayConfig, parse_config
from broker.errors import ConfigError
from broker.settings import Settings
from broker.topics import HEADER_SIGNATURE
from schemas.jobs import Priority
from tests.helpers import chat_job, create_topic, read_topic, running_worker
from workers.devstack.simulator import SimulatorServer
from workers.pipeline.access import AccessControl

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-signing-key-for-acme"
SECRET_ENV = "HEADWAY_TEST_ACME_SECRET"


def acme_config(simulator_url: str) -> HeadwayConfig:
    return parse_config(
        {
            "providers": {"sim": {"type": "simulator", "base_url": simulator_url}},
            "routes": {
                "summarize": {"kind": "chat", "deployments": [{"provider": "sim", "model": "m"}]}
            },
            "tenants": {
                "acme": {"signing_secret_env": SECRET_ENV, "reply_topics": ["acme.*"]},
            },
        }
    )


async def test_only_correctly_signed_jobs_of_a_signing_tenant_run(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(SECRET_ENV, SECRET)
    settings = make_settings(database_url=sqlite_url)
    config = acme_config(simulator.base_url)
    bootstrap = settings.kafka_bootstrap or ""
    lane = settings.topics.jobs(Priority.NORMAL)
    async with running_worker(settings, config):
        async with HeadwayClient(settings, signing_secret=SECRET) as signed:
            await signed.submit(chat_job("good", tenant="acme"))
        async with HeadwayClient(settings) as unsigned:
            await unsigned.submit(chat_job("unsigned", tenant="acme"))
        async with HeadwayClient(settings, signing_secret="not-the-secret") as forger:
            await forger.submit(chat_job("forged", tenant="acme"))
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:  # a valid signature of other bytes
            value = json.dumps(chat_job("tampered", tenant="acme")).encode()
            header = sign(json.dumps(chat_job("original", tenant="acme")).encode(), SECRET)
            await producer.send_and_wait(
                lane, value, key=b"tampered", headers=[(HEADER_SIGNATURE, header.encode())]
            )
        finally:
            await producer.stop()
        results = await read_topic(bootstrap, settings.topics.results, until_keys=4)
        dead = await read_topic(bootstrap, settings.topics.dlq, until_keys=0, timeout_s=1)

    status = {key: copies[0] for key, copies in results.by_key.items()}
    assert status["good"]["status"] == "succeeded"
    for key in ("unsigned", "forged", "tampered"):
        assert status[key]["status"] == "rejected", key
        assert status[key]["error"]["code"] == "forbidden"
        assert status[key]["error"]["message"].startswith("signature:")
    assert simulator.stats.calls == 1
    # the secret appears nowhere: results, dead letters, log lines
    published = b"".join(r.value or b"" for r in results.records + dead.records)
    assert SECRET.encode() not in published
    assert all(SECRET not in record.getMessage() for record in caplog.records)


async def test_a_reply_topic_outside_the_allowlist_is_forbidden_and_one_inside_gets_the_result(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    settings = make_settings(database_url=sqlite_url)
    config = acme_config(simulator.base_url)
    bootstrap = settings.kafka_bootstrap or ""
    reply = f"acme.{settings.topic_prefix}.replies"
    await create_topic(bootstrap, reply)  # the tenant's own topic, made by the tenant
    async with (
        running_worker(settings, config),
        HeadwayClient(settings, signing_secret=SECRET) as c,
    ):
        await c.submit(chat_job("inside", tenant="acme", reply_topic=reply))
        await c.submit(chat_job("outside", tenant="acme", reply_topic="elsewhere.results"))
        replies = await read_topic(bootstrap, reply, until_keys=1)
        results = await read_topic(bootstrap, settings.topics.results, until_keys=1)
    assert replies.by_key["inside"][0]["status"] == "succeeded"
    outside = results.by_key["outside"][0]
    assert outside["status"] == "rejected" and outside["error"]["code"] == "forbidden"
    assert "reply_topic" in outside["error"]["message"]
    assert simulator.stats.calls == 1


def test_a_signing_tenant_whose_secret_is_not_set_stops_the_worker_naming_the_key() -> None:
    config = acme_config("http://127.0.0.1:1/v1")
    with pytest.raises(ConfigError, match=f"tenants.acme.signing_secret_env: .*{SECRET_ENV}"):
        AccessControl(config, environ={})


async def test_unsigned_records_cannot_squat_a_signing_tenants_job_ids_or_redirect_its_output(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    settings = make_settings(database_url=sqlite_url)
    config = acme_config(simulator.base_url)
    bootstrap = settings.kafka_bootstrap or ""
    stolen = f"acme.{settings.topic_prefix}.stolen"
    await create_topic(bootstrap, stolen)  # inside acme's reply_topics globs
    async with running_worker(settings, config):
        # first, a producer without the secret: unsigned copies of ids acme will use, one of
        # them invalid (an invalid job's rejection was stored too)
        async with HeadwayClient(settings) as mallory:
            await mallory.submit(chat_job("squat-valid", tenant="acme"))
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            invalid = json.dumps(chat_job("squat-invalid", tenant="acme", kind="bogus"))
            lane = settings.topics.jobs(Priority.NORMAL)
            await producer.send_and_wait(lane, invalid.encode(), key=b"squat-invalid")
        finally:
            await producer.stop()
        await read_topic(bootstrap, settings.topics.results, until_keys=2)
        # then acme itself, signed: its jobs run
        async with HeadwayClient(settings, signing_secret=SECRET) as acme:
            for job_id in ("squat-valid", "squat-invalid", "finished"):
                await acme.submit(chat_job(job_id, tenant="acme"))
        results = await read_topic(bootstrap, settings.topics.results, until_keys=3)
        # an unsigned copy of a finished job asks for its output on a topic it can read
        async with HeadwayClient(settings) as mallory:
            await mallory.submit(chat_job("finished", tenant="acme", reply_topic=stolen))
        results = await read_topic(
            bootstrap, settings.topics.results, until_keys=3, until_records=6
        )
        leaked = await read_topic(bootstrap, stolen, until_keys=1, timeout_s=2)

    outcomes = {key: [r["status"] for r in copies] for key, copies in results.by_key.items()}
    assert outcomes["squat-valid"] == ["rejected", "succeeded"]
    assert outcomes["squat-invalid"] == ["rejected", "succeeded"]
    assert outcomes["finished"] == ["succeeded", "rejected"]  # the copy: forbidden, no output
    assert results.by_key["finished"][1]["output"] is None
    assert leaked.records == []
    assert simulator.stats.calls == 3
