"""How long ``beosub``'s Python takes to start, before it does any work.

Figure: median wall time of a fresh interpreter importing every module a
``beosub`` submission imports (the console entry, closure resolver, snapshot,
the blocking master client, the wire messages), then exiting.
Baseline, same run: the same imports plus what ``beosub`` imported at start
before the standard-library client (aiohttp's client, asyncio, rich's
console/progress/table). Both include the interpreter's own start; the bare
interpreter (``python -c pass``) is printed for reference.
Goal: beosub's start far under the 0.43 s measured before, toward the warm
launch goal of 0.3 s for the whole ``beosub -N 4 -- /bin/true``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from bench.record import report

RUNS = 15
NOW = (
    "import launcher.cli.beosub, cachefs.closure, cachefs.snapshot, "
    "launcher.master.client, launcher.master.paths, launcher.wire"
)
BEFORE = NOW + ", asyncio, aiohttp, rich.console, rich.progress, rich.table"


def _median_start(code: str) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _leaks() -> list[str]:
    """Heavy modules the submission path still imports (should be none)."""
    code = NOW + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    heavy = ("aiohttp", "asyncio", "rich", "sqlalchemy", "alembic")
    return [m for m in heavy if m in loaded]


def main() -> None:
    bare = _median_start("pass")
    now = _median_start(NOW)
    before = _median_start(BEFORE)
    print(f"bare interpreter: {bare:.3f} s; heavy modules still imported: {_leaks() or 'none'}")
    report(
        "beosub start (imports of a submission)",
        now,
        before,
        "s",
        "far under 0.43 s (warm launch goal 0.3 s in all)",
        higher_is_better=False,
    )


if __name__ == "__main__":
    main()
