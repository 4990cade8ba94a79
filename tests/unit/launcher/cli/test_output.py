"""emit's tables: byte for byte what rich's Table printed before the plain-row path."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table

from launcher.cli import output
from launcher.cli.output import emit

COLUMNS = ("name", "state", "load", "when", "pinned", "reason")
ROWS: list[dict[str, Any]] = [
    {
        "name": "n0001",
        "state": "up",
        "load": 0.25,
        "when": datetime(2026, 12, 7, 9, 0, tzinfo=UTC),
        "pinned": [3, 4],
        "reason": None,
    },
    {
        "name": "a-much-longer-node-name",
        "state": "drained",
        "load": 12345.678,
        "when": None,
        "pinned": [],
        "reason": "fan é中 broken",
    },
]


def rich_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str | None = None
) -> None:
    """What emit printed for a table before it wrote plain rows itself."""
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 100_000)
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for c in columns:
        table.add_column(c.upper(), overflow="fold")
    for r in rows:
        table.add_row(*(output._cell(r[c]) for c in columns))
    console.print(table, crop=False)


def both(
    capsys: pytest.CaptureFixture[str], rows: list[dict[str, Any]], title: str | None = None
) -> tuple[str, str]:
    emit(rows, COLUMNS, "table", title=title)
    ours = capsys.readouterr().out
    rich_table(rows, COLUMNS, title)
    return ours, capsys.readouterr().out


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"reason": "path /data/[run1]/out"},  # markup: rich's reading is kept
        {"reason": "tab\there"},
    ],
    ids=["plain", "markup", "control"],
)
def test_piped_table_is_what_rich_printed(
    capsys: pytest.CaptureFixture[str], extra: dict[str, Any]
) -> None:
    rows = [ROWS[0], {**ROWS[1], **extra}]
    ours, theirs = both(capsys, rows)
    assert ours == theirs
    assert ours.splitlines()[0].startswith("NAME ")


def test_many_rows_are_laid_out_as_rich_does(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{**ROWS[i % 2], "name": f"n{i}"} for i in range(300)]
    ours, theirs = both(capsys, rows)
    assert ours == theirs
    assert len(ours.splitlines()) == 301


def test_titled_table(capsys: pytest.CaptureFixture[str]) -> None:
    ours, theirs = both(capsys, ROWS, title="Slurm")
    assert ours == theirs
    assert "Slurm" in ours


@pytest.mark.parametrize("columns", ["200", "40"], ids=["fits", "folded"])
def test_terminal_table_is_what_rich_printed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, columns: str
) -> None:
    """On a terminal: the bold header, and folding when wider than the terminal."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.delenv("NO_COLOR", raising=False)
    ours, theirs = both(capsys, ROWS)
    assert ours == theirs
    assert "\x1b[1m" in ours
