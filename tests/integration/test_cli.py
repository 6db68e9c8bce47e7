"""The `headway` command line, run as a user would: topics, migrations, submit, results, status."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from broker.config import development_config
from broker.settings import Settings
from tests.helpers import running_worker
from workers.devstack.simulator import SimulatorServer

JOBS = 60


def cli_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "HEADWAY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "HEADWAY_DATABASE_URL": settings.database_url,
        "HEADWAY_TOPIC_PREFIX": settings.topic_prefix,
        "HEADWAY_CONSUMER_GROUP": settings.consumer_group,
        "HEADWAY_CONFIG": str(settings.config),
    }


async def headway(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "workers", *args],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_topics_create_and_db_upgrade_are_idempotent(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    first = await headway(settings, "topics", "create")
    assert first.returncode == 0, first.stderr
    assert f"{settings.topic_prefix}.jobs.high" in first.stdout
    second = await headway(settings, "topics", "create")
    assert second.returncode == 0 and "all topics exist" in second.stdout
    for _ in range(2):
        upgraded = await headway(settings, "db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr


async def test_submit_a_file_then_read_every_result_and_the_status(
    make_settings: Callable[..., Settings],
    sqlite_url: str,
    simulator: SimulatorServer,
    tmp_path: Path,
) -> None:
    settings = make_settings(database_url=sqlite_url)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        "\n".join(
            json.dumps(
                {
                    "job_id": f"cli-{i}",
                    "kind": "chat",
                    "route": "summarize",
                    "messages": [{"role": "user", "content": f"line {i}"}],
                }
            )
            for i in range(JOBS)
        )
    )
    out = tmp_path / "results.jsonl"
    async with running_worker(settings, development_config(simulator.base_url)):
        submitted = await headway(
            settings, "submit", str(jobs), "--tenant", "demo", "--batch", "cli"
        )
        assert submitted.returncode == 0, submitted.stderr
        assert f"published {JOBS} jobs" in submitted.stdout
        followed = await headway(
            settings,
            "results",
            "--batch",
            "cli",
            "--tenant",
            "demo",
            "--follow",
            "--count",
            str(JOBS),
            "--out",
            str(out),
        )
        assert followed.returncode == 0, followed.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["job_id"] for r in results) == sorted(f"cli-{i}" for i in range(JOBS))
    assert all(r["status"] == "succeeded" and r["batch_id"] == "cli" for r in results)
    status = await headway(settings, "status", "--batch", "cli")
    assert status.returncode == 0 and f"{JOBS}/{JOBS} finished" in status.stdout
    assert "queued (in the lanes)" in status.stdout and status.stderr == ""
    usage = await headway(settings, "usage", "--tenant", "demo")
    assert usage.returncode == 0 and "summarize" in usage.stdout


async def test_a_file_with_bad_lines_publishes_nothing_and_names_them(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    jobs = tmp_path / "bad.jsonl"
    jobs.write_text('{"job_id": "a", "kind": "chat"}\nnot json\n')
    result = await headway(settings, "submit", str(jobs), "--tenant", "demo")
    assert result.returncode == 2
    assert "line 1" in result.stderr and "line 2" in result.stderr
    assert "nothing was published" in result.stderr


async def test_a_worker_without_a_bootstrap_says_what_to_set(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(kafka_bootstrap=None)
    env = {k: v for k, v in cli_env(settings).items() if k != "HEADWAY_KAFKA_BOOTSTRAP"}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "workers", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "HEADWAY_KAFKA_BOOTSTRAP" in result.stderr


async def test_status_without_a_reachable_kafka_still_shows_the_ledgers_counts(
    make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    settings = make_settings(database_url=sqlite_url, kafka_bootstrap="127.0.0.1:9")
    status = await headway(settings, "status", "--batch", "nothing", "--tenant", "demo")
    assert status.returncode == 0, status.stderr
    assert "0/0 finished" in status.stdout and "queued (in the lanes)" not in status.stdout
    assert "the lanes were not read" in status.stderr
