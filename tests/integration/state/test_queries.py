"""Accounting queries return exactly the expected rows on a populated cluster."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from launcher.errors import NotFoundError
from launcher.state import queries
from launcher.state.db import transaction
from tests.integration.state.populate import (
    DATA,
    FOO_V1,
    FOO_V2,
    LIBC,
    PROG_V1,
    PROG_V2,
    SIZES,
    T0,
    Populated,
)


def _jobs(rows: list[queries.JobFileRow]) -> list[tuple[int, str, str, str]]:
    return [(r.job_id, r.node, r.path, r.sha256) for r in rows]


def test_jobs_with_object(engine: Engine, cluster: Populated) -> None:
    with transaction(engine, readonly=True) as s:
        assert _jobs(queries.jobs_with_object(s, FOO_V1)) == [
            (cluster.job1, "n1", "/usr/lib/libfoo.so.1.0", FOO_V1),
            (cluster.job1, "n2", "/usr/lib/libfoo.so.1.0", FOO_V1),
        ]
        # libc is in both manifests; job 3 never started, so it is not listed.
        assert [(r.job_id, r.node) for r in queries.jobs_with_object(s, LIBC)] == [
            (cluster.job1, "n1"),
            (cluster.job1, "n2"),
            (cluster.job2, "n2"),
            (cluster.job2, "n3"),
        ]
        rows = queries.jobs_with_object(s, FOO_V2)
        assert {(r.scheduler, r.scheduler_job_id) for r in rows} == {("slurm", "1234")}
        assert queries.jobs_with_object(s, "0" * 64) == []


def test_jobs_with_path_follows_the_soname_symlink(engine: Engine, cluster: Populated) -> None:
    with transaction(engine, readonly=True) as s:
        assert _jobs(queries.jobs_with_path(s, "/usr/lib/libfoo.so.1")) == [
            (cluster.job1, "n1", "/usr/lib/libfoo.so.1", FOO_V1),
            (cluster.job1, "n2", "/usr/lib/libfoo.so.1", FOO_V1),
            (cluster.job2, "n2", "/usr/lib/libfoo.so.1", FOO_V2),
            (cluster.job2, "n3", "/usr/lib/libfoo.so.1", FOO_V2),
        ]
        assert queries.jobs_with_path(s, "/usr/lib") == []  # a dir is no file version


def test_nodes_holding(engine: Engine, cluster: Populated) -> None:
    with transaction(engine, readonly=True) as s:
        rows = queries.nodes_holding(s, LIBC)
        assert [(r.node, r.pinned_by) for r in rows] == [
            ("n1", (cluster.job1,)),
            ("n2", (cluster.job2,)),
            ("n3", (cluster.job2,)),
        ]
        assert rows[1].cached_at == T0  # first cached for job 1 ...
        assert rows[1].last_used == T0 + timedelta(days=1, hours=1)  # ... used again for job 2
        assert [r.node for r in queries.nodes_holding(s, FOO_V1)] == ["n1", "n2"]


def test_path_versions(engine: Engine, cluster: Populated) -> None:
    with transaction(engine, readonly=True) as s:
        rows = queries.path_versions(s, "/opt/demo/prog")
        assert [(r.sha256, r.size, r.first_seen, r.manifests, r.jobs) for r in rows] == [
            (PROG_V1, SIZES[PROG_V1], T0, 1, 2),
            (PROG_V2, SIZES[PROG_V2], T0 + timedelta(days=1), 1, 1),
        ]
        rows = queries.path_versions(s, "/usr/lib/libfoo.so.1")
        assert [r.sha256 for r in rows] == [FOO_V1, FOO_V2]
        assert queries.path_versions(s, "/nowhere") == []


def test_manifest_diff(engine: Engine, cluster: Populated) -> None:
    with transaction(engine, readonly=True) as s:
        rows = queries.manifest_diff(s, str(cluster.job1), "slurm:1234")
        assert [(r.path, r.old, r.new) for r in rows] == [
            ("/opt/demo/prog", PROG_V1, PROG_V2),
            ("/usr/lib/libfoo.so.1", "-> libfoo.so.1.0", "-> libfoo.so.1.1"),
            ("/usr/lib/libfoo.so.1.0", FOO_V1, None),
            ("/usr/lib/libfoo.so.1.1", None, FOO_V2),
            ("/usr/share/demo/data.txt", None, DATA),
        ]
        reverse = queries.manifest_diff(s, "slurm:1234", str(cluster.job1))
        assert (reverse[0].path, reverse[0].old, reverse[0].new) == (
            "/opt/demo/prog",
            PROG_V2,
            PROG_V1,
        )
        assert queries.manifest_diff(s, str(cluster.job1), str(cluster.job3)) == []


def test_unknown_job_is_named(engine: Engine, cluster: Populated) -> None:
    with transaction(engine, readonly=True) as s:
        with pytest.raises(NotFoundError, match="slurm:999"):
            queries.manifest_diff(s, "slurm:999", str(cluster.job1))
        with pytest.raises(NotFoundError, match="'bogus'"):
            queries.find_job(s, "bogus")


def test_usage_by_job(engine: Engine, cluster: Populated) -> None:
    m1 = SIZES[PROG_V1] + SIZES[FOO_V1] + SIZES[LIBC]
    m2 = SIZES[PROG_V2] + SIZES[FOO_V2] + SIZES[LIBC] + SIZES[DATA]
    new_in_m2 = SIZES[PROG_V2] + SIZES[FOO_V2] + SIZES[DATA]
    with transaction(engine, readonly=True) as s:
        rows = {r.key: r for r in queries.usage_by_job(s)}
    j1, j2, j3 = rows[str(cluster.job1)], rows[str(cluster.job2)], rows[str(cluster.job3)]
    assert (j1.nodes, j1.objects_total, j1.objects_hit, j1.bytes_total) == (2, 6, 0, 2 * m1)
    assert (j1.bytes_fetched, j1.bytes_from_master, j1.bytes_from_peers) == (
        2 * m1,
        2 * m1 - SIZES[LIBC],
        SIZES[LIBC],
    )
    assert j1.hit_rate == 0.0
    assert (j2.objects_total, j2.objects_hit, j2.bytes_fetched) == (8, 1, new_in_m2 + m2)
    assert (j2.bytes_from_master, j2.bytes_from_peers) == (new_in_m2, m2)
    assert j2.hit_rate == pytest.approx(1 / 8)
    assert j2.fill_seconds == pytest.approx(3.5)
    assert j3.nodes == 1


def test_usage_by_node(engine: Engine, cluster: Populated) -> None:
    with transaction(engine, readonly=True) as s:
        rows = queries.usage_by_node(s)
    assert [(r.key, r.jobs, r.objects_total, r.objects_hit) for r in rows] == [
        ("n1", 1, 3, 0),
        ("n2", 2, 7, 1),
        ("n3", 2, 7, 0),
    ]
    n3 = rows[2]
    assert n3.bytes_from_peers == SIZES[PROG_V2] + SIZES[FOO_V2] + SIZES[LIBC] + SIZES[DATA]
    assert n3.hit_rate == 0.0
