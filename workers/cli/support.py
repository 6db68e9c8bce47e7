"""What every ``headway`` command shares: the consoles, the settings (read once with a clear
error), and user data on its way out — as text, never as markup or a spreadsheet formula.

Batch ids, job ids, tenants, usage tag values, template names, file names and error messages
are written by producers and operators: printed through rich, a ``[/x]`` in one is parsed as
markup (a closing tag with nothing open crashes the command with a MarkupError; ``[red]``
swallows text). :func:`shown` escapes a value for rich markup — every f-string or table cell
holding user data goes through it.

A CSV cell starting with ``=``, ``+``, ``-``, ``@``, TAB or CR is a formula to a spreadsheet
(``=HYPERLINK(...)`` sends the sheet's cells to any address when clicked): every CSV the
command line writes goes through :func:`csv_writer`, which prefixes such a text cell with a
single quote (OWASP's CSV injection advice). Numbers are left as they are.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, TextIO

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from broker.errors import HeadwayError
from broker.settings import Settings

console = Console()
err = Console(stderr=True)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        raise HeadwayError(f"invalid HEADWAY_* settings:\n{error}") from None


def shown(value: object) -> str:
    """``value`` as rich markup that prints exactly its text."""
    return escape(str(value))


def csv_cell(value: Any) -> Any:
    """A text that a spreadsheet would run as a formula, quoted; anything else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class SafeCsvWriter:
    """A ``csv.writer`` whose every text cell goes through :func:`csv_cell`. Lines end in
    CRLF (RFC 4180): a cell holding a CR is then quoted (Python 3.11's writer quotes only the
    line terminator's characters), so no cell can start a row of its own."""

    def __init__(self, sink: TextIO) -> None:
        self._writer = csv.writer(sink, lineterminator="\r\n")

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([csv_cell(value) for value in row])


def csv_writer(sink: TextIO) -> SafeCsvWriter:
    return SafeCsvWriter(sink)
