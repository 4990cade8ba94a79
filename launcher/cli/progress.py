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
    TaskID,
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


class NodeBars:
    """One bar per node for a job's cache fill (stderr, terminals only).

    Started by the first update, gone (transient) at :meth:`close`: the job's
    output then has the terminal to itself.
    """

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._closed = not sys.stderr.isatty()

    def update(
        self, node: str, files_done: int, files_total: int, bytes_done: int, bytes_total: int
    ) -> None:
        if self._closed:
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
        if node not in self._tasks:
            self._tasks[node] = self._progress.add_task(node, total=bytes_total or None)
        self._progress.update(
            self._tasks[node],
            completed=bytes_done,
            total=bytes_total or None,
            description=f"{node} cache fill {files_done}/{files_total}",
        )

    def close(self) -> None:
        self._closed = True
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
