"""Printing rows: a table for people, JSON or CSV for programs.

Commands build a list of dicts with the same keys and call :func:`emit`; the
``--json``/``--csv`` flags come from :func:`format_options`.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

F = TypeVar("F", bound=Callable[..., Any])


def format_options(f: F) -> F:
    f = click.option("--csv", "fmt", flag_value="csv", help="Print CSV with a header row.")(f)
    f = click.option("--json", "fmt", flag_value="json", help="Print JSON for programs.")(f)
    return click.option("--table", "fmt", flag_value="table", default=True, hidden=True)(f)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, tuple):
        return list(value)
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def emit(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    fmt: str,
    *,
    title: str | None = None,
    empty: str = "nothing to show",
) -> None:
    """Print ``rows`` (dicts keyed by ``columns``) as a table, JSON or CSV."""
    if fmt == "json":
        json.dump([{c: _plain(r[c]) for c in columns} for r in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if r[c] is None else _plain(r[c]) for c in columns])
        return
    # Piped output is for grep and awk: never fold a cell across lines.
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 100_000)
    if not rows:
        console.print(f"({empty})", highlight=False)
        return
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for c in columns:
        table.add_column(c.upper(), overflow="fold")
    for r in rows:
        table.add_row(*(_cell(r[c]) for c in columns))
    console.print(table, crop=False)
