"""Progress bars for long work (hashing, cache fill), on stderr, only for a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)

#: (files_done, files_total, bytes_done, bytes_total)
Update = Callable[[int, int, int, int], None]


@contextmanager
def byte_progress(description: str) -> Iterator[Update]:
    """Yield an update function that drives a files-and-bytes bar (silent off a tty)."""
    if not sys.stderr.isatty():
        yield lambda *_: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(files_done: int, files_total: int, bytes_done: int, bytes_total: int) -> None:
            bar.update(
                task,
                completed=bytes_done,
                total=bytes_total or None,
                description=f"{description} {files_done}/{files_total}",
            )

        yield update
