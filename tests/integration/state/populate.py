"""A small populated cluster, built with the real record functions.

Three nodes; two versions of a program and of libfoo (behind its SONAME
symlink); job 1 (local) and job 2 (Slurm 1234) ran, job 3 was accepted on n3
but never started. Tests assert exact rows against this.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from launcher.state.nodes import add_node
from launcher.state.record import (
    EntryRecord,
    pin,
    record_acceptance,
    record_cached,
    record_job,
    record_manifest,
)
from launcher.wire import FillReport

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


PROG_V1, PROG_V2 = sha("prog v1"), sha("prog v2")
FOO_V1, FOO_V2 = sha("libfoo 1.0"), sha("libfoo 1.1")
LIBC, DATA = sha("libc"), sha("data")
SIZES = {PROG_V1: 1000, PROG_V2: 1100, FOO_V1: 20000, FOO_V2: 21000, LIBC: 2_000_000, DATA: 7}


def _file(path: str, digest: str, mode: int = 0o644) -> EntryRecord:
    return EntryRecord(path, "file", mode, digest, SIZES[digest])


M1_ENTRIES = [
    EntryRecord("/usr/lib", "dir", 0o755),
    _file("/opt/demo/prog", PROG_V1, 0o755),
    EntryRecord("/usr/lib/libfoo.so.1", "symlink", 0o777, target="libfoo.so.1.0"),
    _file("/usr/lib/libfoo.so.1.0", FOO_V1),
    _file("/lib/libc.so.6", LIBC),
]
M2_ENTRIES = [
    EntryRecord("/usr/lib", "dir", 0o755),
    _file("/opt/demo/prog", PROG_V2, 0o755),
    EntryRecord("/usr/lib/libfoo.so.1", "symlink", 0o777, target="libfoo.so.1.1"),
    _file("/usr/lib/libfoo.so.1.1", FOO_V2),
    _file("/lib/libc.so.6", LIBC),
    _file("/usr/share/demo/data.txt", DATA),
]
M1, M2 = sha("manifest 1"), sha("manifest 2")


@dataclass(frozen=True)
class Populated:
    job1: int
    job2: int
    job3: int


def populate(session: Session) -> Populated:
    n1 = add_node(session, "n1", mac="52:54:00:00:00:01", address="10.7.0.11", state="up")
    n2 = add_node(session, "n2", mac="52:54:00:00:00:02", address="10.7.0.12", state="up")
    n3 = add_node(session, "n3", mac="52:54:00:00:00:03", address="10.7.0.13", state="up")
    record_manifest(session, M1, 1000, "/opt/demo/prog", M1_ENTRIES, created_at=T0)
    record_manifest(
        session, M2, 1000, "/opt/demo/prog", M2_ENTRIES, created_at=T0 + timedelta(days=1)
    )

    j1 = record_job(
        session, scheduler="local", scheduler_job_id="1", uid=1000, manifest_id=M1, submitted_at=T0
    )
    j1.started_at, j1.ended_at, j1.state, j1.exit_status = (
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=5),
        "completed",
        0,
    )
    m1_bytes = SIZES[PROG_V1] + SIZES[FOO_V1] + SIZES[LIBC]
    # n1 fetched all three objects from the master; n2 got libc from n1.
    record_acceptance(
        session, j1, n1, FillReport(3, 0, m1_bytes, m1_bytes, 0, 2.5), at=T0 + timedelta(seconds=30)
    )
    record_acceptance(
        session,
        j1,
        n2,
        FillReport(3, 0, m1_bytes, SIZES[PROG_V1] + SIZES[FOO_V1], SIZES[LIBC], 1.5),
        at=T0 + timedelta(seconds=31),
    )
    record_cached(session, n1, [PROG_V1, FOO_V1, LIBC], at=T0)
    record_cached(session, n2, [PROG_V1, FOO_V1, LIBC], at=T0)
    pin(session, n1, j1, [PROG_V1, FOO_V1, LIBC])

    t2 = T0 + timedelta(days=1, hours=1)
    j2 = record_job(
        session,
        scheduler="slurm",
        scheduler_job_id="1234",
        uid=1000,
        manifest_id=M2,
        submitted_at=t2,
    )
    j2.started_at, j2.state = t2 + timedelta(minutes=2), "running"
    m2_bytes = SIZES[PROG_V2] + SIZES[FOO_V2] + SIZES[LIBC] + SIZES[DATA]
    new_in_m2 = SIZES[PROG_V2] + SIZES[FOO_V2] + SIZES[DATA]
    # n2 had libc cached (1 hit of 4); n3 was empty and fetched everything.
    record_acceptance(session, j2, n2, FillReport(4, 1, m2_bytes, new_in_m2, 0, 0.5), at=t2)
    record_acceptance(session, j2, n3, FillReport(4, 0, m2_bytes, 0, m2_bytes, 3.0), at=t2)
    record_cached(session, n2, [PROG_V2, FOO_V2, LIBC, DATA], at=t2)
    record_cached(session, n3, [PROG_V2, FOO_V2, LIBC, DATA], at=t2)
    pin(session, n2, j2, [PROG_V2, FOO_V2, LIBC, DATA])
    pin(session, n3, j2, [PROG_V2, FOO_V2, LIBC, DATA])

    # Job 3: accepted on n3 (all hits) but never started: it did not "run".
    j3 = record_job(
        session, scheduler="local", scheduler_job_id="3", uid=1001, manifest_id=M1, submitted_at=t2
    )
    record_acceptance(session, j3, n3, FillReport(3, 0, m1_bytes, m1_bytes, 0, 2.0), at=t2)
    session.flush()
    return Populated(j1.id, j2.id, j3.id)
