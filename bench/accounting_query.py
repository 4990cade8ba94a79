"""How much the state indexes buy the accounting queries.

A state database like a busy month's: 200 manifests of 300 entries (each a
new version of a few libraries), 2,000 jobs on 4 nodes. Figure: median time
of each query on the shipped schema. Baseline: the same query on the same data
with the path index dropped, in the same run. ``path_versions`` reads 200 of
60,000 entries: goal at least 10x faster with the index. ``jobs_with_path``
returns 2,000 rows, whose building dominates: goal under 50 ms and faster than
without the index.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from bench.record import report
from launcher.state import migrate, queries
from launcher.state.db import make_engine, transaction
from launcher.state.nodes import add_node
from launcher.state.record import (
    EntryRecord,
    record_acceptance,
    record_job,
    record_manifest,
)
from launcher.wire import FillReport

MANIFESTS, ENTRIES, JOBS, NODES, REPEAT = 200, 300, 2000, 4, 15
PROBE = "/usr/lib/libprobe.so.1"


def _sha(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def populate(engine: Engine) -> None:
    t0 = datetime(2026, 10, 1, tzinfo=UTC)
    with transaction(engine) as s:
        nodes = [add_node(s, f"n{i}") for i in range(NODES)]
        manifest_ids = []
        for m in range(MANIFESTS):
            # Most libraries stay the same; every tenth manifest has new versions.
            entries = [
                EntryRecord(
                    f"/usr/lib/lib{e}.so",
                    "file",
                    0o644,
                    _sha(e, (m // 10) if e % 7 == 0 else 0),
                    10_000 + e,
                )
                for e in range(ENTRIES - 1)
            ] + [EntryRecord(PROBE, "file", 0o644, _sha("probe", m // 10), 5000)]
            mid = _sha("manifest", m)
            record_manifest(s, mid, 1000, "/bin/app", entries, created_at=t0 + timedelta(hours=m))
            manifest_ids.append(mid)
        for j in range(JOBS):
            job = record_job(
                s,
                scheduler="slurm",
                scheduler_job_id=str(j),
                uid=1000,
                manifest_id=manifest_ids[j % MANIFESTS],
            )
            job.started_at = t0 + timedelta(hours=j)
            record_acceptance(s, job, nodes[j % NODES], FillReport(ENTRIES, 0, 1, 1, 0, 0.1))


def median_seconds(engine: Engine, query: Callable[[Session], int], expected: int) -> float:
    times = []
    for _ in range(REPEAT):
        with transaction(engine, readonly=True) as s:
            start = time.perf_counter()
            rows = query(s)
            times.append(time.perf_counter() - start)
        assert rows == expected
    return statistics.median(times)


QUERIES: dict[str, tuple[Callable[[Session], int], int, str]] = {
    "jobs_with_path": (
        lambda s: len(queries.jobs_with_path(s, PROBE)),
        JOBS,
        "< 50 ms and faster than without the path index",
    ),
    "path_versions": (
        lambda s: len(queries.path_versions(s, PROBE)),
        MANIFESTS // 10,
        ">= 10x faster than without the path index",
    ),
}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'state.db'}")
        migrate.upgrade(engine)
        populate(engine)
        indexed = {name: median_seconds(engine, q, n) for name, (q, n, _) in QUERIES.items()}
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_manifest_entries_path_object_sha256"))
        unindexed = {name: median_seconds(engine, q, n) for name, (q, n, _) in QUERIES.items()}
        engine.dispose()
    for name, (_, _, goal) in QUERIES.items():
        report(
            f"accounting_{name}_sqlite",
            indexed[name] * 1000,
            unindexed[name] * 1000,
            "ms",
            goal,
            higher_is_better=False,
        )


if __name__ == "__main__":
    main()
