"""Provenance of Slurm jobs: beoacct's questions answered by Slurm job id.

The fixture cluster (populate.py) plus a second Slurm job, slurm:1240, that ran
manifest 1 (the old libfoo) on n1 after slurm:1234 had run manifest 2 on n2
and n3: rows are asserted exactly, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from launcher.cli import beoacct, beoctl
from launcher.config import CONFIG_ENV
from launcher.errors import NotFoundError
from launcher.state import queries
from launcher.state.db import make_engine, transaction
from launcher.state.models import Node
from launcher.state.record import record_acceptance, record_job
from launcher.wire import FillReport
from tests.integration.state.populate import (
    FOO_V1,
    FOO_V2,
    LIBC,
    M1,
    PROG_V1,
    PROG_V2,
    SIZES,
    T0,
    Populated,
    populate,
)

T3 = T0 + timedelta(days=2)


def _populate_slurm(engine: Engine) -> tuple[Populated, int]:
    with transaction(engine) as session:
        cluster = populate(session)
        n1 = session.query(Node).filter_by(name="n1").one()
        job = record_job(
            session,
            scheduler="slurm",
            scheduler_job_id="1240",
            uid=1000,
            manifest_id=M1,
            submitted_at=T3,
        )
        job.started_at, job.state = T3 + timedelta(seconds=5), "completed"
        total = SIZES[PROG_V1] + SIZES[FOO_V1] + SIZES[LIBC]
        # n1 still held all three objects of manifest 1: three hits, nothing fetched.
        record_acceptance(session, job, n1, FillReport(3, 3, total, 0, 0, 0.01), at=T3)
        session.flush()
        return cluster, job.id


@pytest.fixture
def slurm_cluster(engine: Engine) -> tuple[Populated, int]:
    return _populate_slurm(engine)


def test_jobs_that_ran_a_version_name_their_slurm_ids(
    engine: Engine, slurm_cluster: tuple[Populated, int]
) -> None:
    _cluster, j1240 = slurm_cluster
    with transaction(engine, readonly=True) as s:
        rows = [r for r in queries.jobs_with_object(s, FOO_V1) if r.scheduler == "slurm"]
        assert [(r.scheduler_job_id, r.job_id, r.node, r.path) for r in rows] == [
            ("1240", j1240, "n1", "/usr/lib/libfoo.so.1.0")
        ]
        by_path = queries.jobs_with_path(s, "/usr/lib/libfoo.so.1")
        slurm = [(r.scheduler_job_id, r.node, r.sha256) for r in by_path if r.scheduler == "slurm"]
        assert slurm == [("1234", "n2", FOO_V2), ("1234", "n3", FOO_V2), ("1240", "n1", FOO_V1)]


def test_version_of_a_path_a_slurm_job_used_per_node(
    engine: Engine, slurm_cluster: tuple[Populated, int]
) -> None:
    cluster, _ = slurm_cluster
    with transaction(engine, readonly=True) as s:
        rows = queries.job_versions(s, "slurm:1234", "/usr/lib/libfoo.so.1")
        assert [(r.job_id, r.node, r.path, r.sha256) for r in rows] == [
            (cluster.job2, "n2", "/usr/lib/libfoo.so.1", FOO_V2),
            (cluster.job2, "n3", "/usr/lib/libfoo.so.1", FOO_V2),
        ]
        assert rows[0].scheduler_job_id == "1234"
        every = queries.job_versions(s, "slurm:1240")
        assert [(r.node, r.path, r.sha256) for r in every] == [
            ("n1", "/lib/libc.so.6", LIBC),
            ("n1", "/opt/demo/prog", PROG_V1),
            ("n1", "/usr/lib/libfoo.so.1.0", FOO_V1),
        ]
        assert queries.job_versions(s, "slurm:1234", "/usr/lib") == []  # a dir
        with pytest.raises(NotFoundError, match="slurm:77"):
            queries.job_versions(s, "slurm:77")


def test_what_changed_between_two_slurm_jobs(
    engine: Engine, slurm_cluster: tuple[Populated, int]
) -> None:
    with transaction(engine, readonly=True) as s:
        rows = queries.manifest_diff(s, "slurm:1240", "slurm:1234")
    assert [(r.path, r.old, r.new) for r in rows][:2] == [
        ("/opt/demo/prog", PROG_V1, PROG_V2),
        ("/usr/lib/libfoo.so.1", "-> libfoo.so.1.0", "-> libfoo.so.1.1"),
    ]
    assert len(rows) == 5


def test_usage_of_slurm_jobs_by_their_ids(
    engine: Engine, slurm_cluster: tuple[Populated, int]
) -> None:
    cluster, j1240 = slurm_cluster
    with transaction(engine, readonly=True) as s:
        ids = [queries.find_job(s, ref).id for ref in ("slurm:1234", "slurm:1240")]
        rows = queries.usage_by_job(s, ids)
        refs = queries.scheduler_refs(s, ids)
    assert [r.key for r in rows] == [str(cluster.job2), str(j1240)]
    assert refs == {cluster.job2: "slurm:1234", j1240: "slurm:1240"}
    assert (rows[1].objects_hit, rows[1].bytes_fetched, rows[1].hit_rate) == (3, 0, 1.0)
    assert (rows[0].objects_total, rows[0].objects_hit) == (8, 1)


@pytest.fixture
def state_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Populated, int]:
    state_dir = tmp_path / "beo"
    assert beoctl.main(["init", "--state-dir", str(state_dir)]) == 0
    monkeypatch.setenv(CONFIG_ENV, str(state_dir / "config.toml"))
    engine = make_engine(f"sqlite:///{state_dir / 'state.db'}")
    try:
        return _populate_slurm(engine)
    finally:
        engine.dispose()


def test_beoacct_files_json_and_csv(
    state_db: tuple[Populated, int], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert beoacct.main(["files", "slurm:1234", "--path", "/usr/lib/libfoo.so.1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["scheduler_job"], r["node"], r["sha256"]) for r in rows] == [
        ("slurm:1234", "n2", FOO_V2),
        ("slurm:1234", "n3", FOO_V2),
    ]
    assert beoacct.main(["files", "slurm:1240", "--csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {(r["node"], r["path"], r["sha256"]) for r in table} == {
        ("n1", "/lib/libc.so.6", LIBC),
        ("n1", "/opt/demo/prog", PROG_V1),
        ("n1", "/usr/lib/libfoo.so.1.0", FOO_V1),
    }
    assert beoacct.main(["files", "slurm:9"]) != 0
    assert "no job 'slurm:9'" in capsys.readouterr().err


def test_beoacct_usage_and_jobs_by_slurm_id(
    state_db: tuple[Populated, int], capsys: pytest.CaptureFixture[str]
) -> None:
    _cluster, j1240 = state_db
    capsys.readouterr()
    assert beoacct.main(["usage", "--job", "slurm:1240", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["job"], r["scheduler_job"], r["objects_hit"], r["hit_rate"]) for r in rows] == [
        (j1240, "slurm:1240", 3, 1.0)
    ]
    assert beoacct.main(["jobs", "--sha256", FOO_V1, "--scheduler", "slurm", "--csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["scheduler_job_id"], r["node"]) for r in table] == [("1240", "n1")]
    assert beoacct.main(["diff", "slurm:1240", "slurm:1234"]) == 0
    out = capsys.readouterr().out
    assert PROG_V1[:12] in out or PROG_V1 in out
    assert beoacct.main(["usage", "--job", "slurm:1240"]) == 0
    assert "slurm:1240" in capsys.readouterr().out
