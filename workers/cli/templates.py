"""``headway templates push|list|show``: the prompt templates in the ledger database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.errors import HeadwayError
from workers.cli.support import console, load_settings, shown
from workers.ledger import template_rows as store
from workers.ledger.database.engine import create_engine
from workers.templates.rendering import load_file

templates_app = typer.Typer(no_args_is_help=True, help="prompt templates")
T = TypeVar("T")


def _in_transaction(work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    async def main() -> T:
        engine = create_engine(load_settings().database_url)
        try:
            async with engine.begin() as conn:
                return await work(conn)
        finally:
            await engine.dispose()

    return asyncio.run(main())


@templates_app.command("push")
def templates_push(
    files: Annotated[list[Path], typer.Argument(help="template files (.toml or .json)")],
) -> None:
    """Store each file as the next version of its template (unchanged content: no new version)."""
    specs = [load_file(path) for path in files]  # all checked (TemplateError) before any is stored

    async def push_all(conn: AsyncConnection) -> list[store.Pushed]:
        return [await store.push(conn, spec) for spec in specs]

    for spec, pushed in zip(specs, _in_transaction(push_all), strict=True):
        said = "pushed as" if pushed.created else "unchanged, still"
        console.print(f"{shown(spec.name)}: {said} version {pushed.version}")


@templates_app.command("list")
def templates_list(
    name: Annotated[str | None, typer.Argument(help="only this template's versions")] = None,
) -> None:
    """Every template version, built-in ones included."""
    listed = _in_transaction(lambda conn: store.listing(conn, name))
    table = Table(title=f"templates ({len(listed)} versions)")
    for column in ("name", "version", "pushed", "description"):
        table.add_column(column, overflow="fold")
    for item in listed:
        pushed = (
            "built in"
            if item.created_at is None
            else datetime.fromtimestamp(item.created_at, UTC).isoformat(timespec="seconds")
        )
        table.add_row(shown(item.name), str(item.version), pushed, shown(item.description))
    console.print(table)


@templates_app.command("show")
def templates_show(
    name: Annotated[str, typer.Argument()],
    version: Annotated[int | None, typer.Option(min=1, help="default: the latest")] = None,
) -> None:
    """One version as JSON (name, version, description, messages, defaults)."""
    found = _in_transaction(lambda conn: store.get(conn, name, version))
    if found is None:
        which = f"version {version} of " if version is not None else ""
        raise HeadwayError(f"no {which}template named {name!r}")
    shown: dict[str, Any] = {"name": found.name, "version": found.version, **found.spec.body()}
    print(json.dumps(shown, indent=2, ensure_ascii=False))
