"""``headway dlq list`` and ``headway dlq replay``: inspect dead letters, republish after a fix."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from broker import dlq
from broker.errors import ConfigError
from workers.cli.support import console, load_settings, shown

dlq_app = typer.Typer(no_args_is_help=True, help="the dead-letter topic")

Since = Annotated[
    datetime | None, typer.Option(help="dead-lettered at or after (ISO date or time, UTC)")
]
Limit = Annotated[int | None, typer.Option(min=1, help="at most this many")]
Filter = Annotated[
    str | None,
    typer.Option("--filter", help="regex searched in the error, the key and the value"),
]


def _selection(since: datetime | None, limit: int | None, pattern: str | None) -> dlq.Selection:
    try:
        return dlq.Selection.parse(since, limit, pattern)
    except ValueError as error:
        raise ConfigError(str(error)) from None


@dlq_app.command("list")
def dlq_list(
    since: Since = None,
    limit: Limit = 100,
    pattern: Filter = None,
    json_lines: Annotated[bool, typer.Option("--json", help="JSON lines, value included")] = False,
) -> None:
    """Dead letters: when, key, why, where from."""
    selection = _selection(since, limit, pattern)

    async def main() -> list[dlq.DeadLetter]:
        return [letter async for letter in dlq.read(load_settings(), selection)]

    letters = asyncio.run(main())
    if json_lines:
        for letter in letters:
            print(dlq.as_jsonl(letter))
        return
    table = Table(title=f"dead letters ({len(letters)})")
    for column in ("partition:offset", "dead-lettered", "key", "from", "bytes", "error"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        table.add_row(
            f"{letter.partition}:{letter.offset}",
            letter.at.strftime("%Y-%m-%d %H:%M:%S"),
            shown((letter.key or b"").decode("utf-8", "replace")[:64]),
            shown(f"{letter.sources[-1] if letter.sources else '?'}@{letter.source_offset}"),
            str(len(letter.value or b"")),
            shown(letter.error[:200]),
        )
    console.print(table)


@dlq_app.command("replay")
def dlq_replay(
    since: Since = None,
    limit: Limit = None,
    pattern: Filter = None,
    dry_run: Annotated[bool, typer.Option(help="count what would be replayed")] = False,
) -> None:
    """Republish dead letters to the lanes they came from (failed/rejected jobs run again)."""
    selection = _selection(since, limit, pattern)
    report = asyncio.run(dlq.replay(load_settings(), selection, dry_run=dry_run))
    verb = "would replay" if dry_run else "replayed"
    where = ", ".join(f"{n} to {t}" for t, n in sorted(report.by_topic.items()))
    listed = f" ({shown(where)})" if where else ""
    console.print(f"{verb} {report.replayed} dead letters{listed}")
    if report.skipped:
        console.print(
            f"skipped {report.skipped} without a value (undecodable records: each names the "
            "topic, partition and offset where the original stays)"
        )
