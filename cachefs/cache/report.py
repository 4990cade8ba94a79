"""What a fill reports: progress while it runs, a FillReport at the end, and the
cache's usage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

#: A progress callback is called at least every this many bytes received, and
#: after every object (a bar moves smoothly without a call per 64 KiB chunk).
PROGRESS_STEP = 1 << 20


@dataclass(frozen=True)
class FillProgress:
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int


@dataclass(frozen=True)
class FillReport:
    """The outcome of one fill.

    ``objects_hit``: objects this fill did not download (already cached, or
    downloaded meanwhile by another fill or process). ``bytes_from``: bytes
    received per source kind ("master", "peer"), discarded copies included.
    ``discarded``: copies thrown away (bad sha256, wrong size, source failed
    mid-stream) and fetched again.
    """

    objects_total: int
    objects_hit: int
    bytes_total: int
    bytes_from: dict[str, int]
    seconds: float
    discarded: int = 0

    @property
    def objects_fetched(self) -> int:
        return self.objects_total - self.objects_hit


@dataclass(frozen=True)
class JobPins:
    objects: int
    bytes: int


@dataclass(frozen=True)
class CacheUsage:
    """``pinned_*`` count each pinned object once, whichever jobs pin it, and
    include objects pinned by a fill still downloading them."""

    bytes_used: int
    budget_bytes: int
    objects: int
    pinned_objects: int
    pinned_bytes: int
    jobs: dict[str, JobPins] = field(default_factory=dict)


class Tally:
    """Counts one fill's progress and calls its callback, throttled."""

    def __init__(
        self,
        files_total: int,
        bytes_total: int,
        progress: Callable[[FillProgress], None] | None,
    ) -> None:
        self.files_total = files_total
        self.bytes_total = bytes_total
        self.files_done = 0
        self.bytes_done = 0
        self.hits = 0
        self.discarded = 0
        self.bytes_from: dict[str, int] = {}
        self._progress = progress
        self._reported: tuple[int, int] | None = None

    def report(self) -> None:
        now = (self.files_done, self.bytes_done)
        if self._progress is not None and now != self._reported:
            self._reported = now
            self._progress(
                FillProgress(self.files_done, self.files_total, self.bytes_done, self.bytes_total)
            )

    def received(self, kind: str, count: int, credit: int) -> None:
        """``count`` bytes arrived from a source of ``kind``; ``credit`` of them
        count towards the bar (bytes beyond an object's size do not)."""
        self.bytes_from[kind] = self.bytes_from.get(kind, 0) + count
        self.bytes_done += credit
        last = self._reported[1] if self._reported else 0
        if self.bytes_done - last >= PROGRESS_STEP:
            self.report()

    def discard(self, credited: int) -> None:
        """A copy failed its check: take its bytes off the bar again."""
        self.discarded += 1
        self.bytes_done -= credited

    def object_done(self, credit: int, *, hit: bool, report: bool = True) -> None:
        self.files_done += 1
        self.bytes_done += credit
        if hit:
            self.hits += 1
        if report:
            self.report()
