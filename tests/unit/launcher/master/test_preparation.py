"""The job-preparation core both engines use: one capability per job, the node's
[envroot] part, and a fill report that is recorded or, when nonsense, zeroed."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from cachefs.manifest import Entry, Manifest, build
from launcher.master.capability import verify
from launcher.master.preparation import Preparation, accept, fill_of, node_row
from launcher.state.db import transaction
from launcher.state.models import CacheEntry, CachePin, JobNode, Node
from launcher.state.record import record_job, record_submitted_manifest
from launcher.wire import FillReport, Prepared
from tests.unit.launcher.master.bareprep import bare_preparation

BODY = b"#!/bin/sh\necho hi\n"
SHA = hashlib.sha256(BODY).hexdigest()


def _preparation(tmp_path: Path) -> tuple[Preparation, str]:
    prep, store = bare_preparation(tmp_path)
    manifest = build("/bin/prog", [Entry("/bin/prog", "file", 0o755, len(BODY), SHA)], owner=0)
    store.ingest_bytes(BODY)
    store.ingest_bytes(manifest.canonical())
    return prep, manifest.id


def test_every_node_gets_the_same_capability_and_the_jobs_late_policy(tmp_path: Path) -> None:
    prep, manifest_id = _preparation(tmp_path)
    document = prep.document(manifest_id)
    sources = {"n1": [{"url": "http://m", "kind": "master"}], "n2": []}
    prepares = prep.prepares(5, manifest_id, document, prep.objects(manifest_id), "fail", sources)
    assert sorted(prepares) == ["n1", "n2"]
    assert prepares["n1"].token == prepares["n2"].token
    assert prepares["n1"].sources == sources["n1"] and prepares["n2"].manifest == document
    assert prepares["n1"].envroot is not None and prepares["n1"].envroot["late"] == "fail"
    capability = verify("secret", prepares["n1"].token)
    assert capability is not None and (capability.job, capability.manifest) == (5, manifest_id)
    prep.engine.dispose()


def test_a_nonsense_fill_report_is_zeroed_and_said(caplog: pytest.LogCaptureFixture) -> None:
    good = {"objects_total": 2, "objects_hit": 1, "bytes_total": 9, "seconds": 0.5}
    assert fill_of("n1", Prepared(3, True, None, good)) == FillReport(2, 1, 9, 0, 0, 0.5)
    bad: dict[str, Any] = {"objects_total": 1, "objects_hit": 4}
    with caplog.at_level(logging.WARNING, logger="launcher.master.preparation"):
        assert fill_of("n1", Prepared(3, True, None, bad)) == FillReport()
    assert "node n1 sent an impossible fill report for job 3" in caplog.text
    assert "4 hits of 1 objects" in caplog.text


def test_acceptance_records_the_fill_the_cache_and_the_pins(tmp_path: Path) -> None:
    prep, manifest_id = _preparation(tmp_path)
    manifest = Manifest.from_document(prep.document(manifest_id))
    with transaction(prep.engine) as session:
        session.add(Node(name="n1", state="up"))
        record_submitted_manifest(session, manifest)
        job = record_job(session, scheduler="local", uid=os.getuid(), manifest_id=manifest_id)
        fill = FillReport(1, 0, 9, 9, 0, 0.1)
        accept(session, job, {"n1": (node_row(session, "n1"), fill)}, [SHA])
    with transaction(prep.engine, readonly=True) as session:
        part = session.scalars(select(JobNode)).one()
        assert (part.objects_total, part.bytes_from_master, part.fill_seconds) == (1, 9, 0.1)
        assert [e.object_sha256 for e in session.scalars(select(CacheEntry))] == [SHA]
        assert [p.object_sha256 for p in session.scalars(select(CachePin))] == [SHA]
    prep.engine.dispose()


def test_a_thousand_nodes_accept_in_a_few_statements_not_one_per_node_and_object(
    tmp_path: Path,
) -> None:
    """The scheduler records a 1,000-node job's acceptance in one call: its cost
    must not grow with nodes x objects (issue 15: it was 2 queries per pin)."""
    prep, manifest_id = _preparation(tmp_path)
    manifest = Manifest.from_document(prep.document(manifest_id))
    names = [f"n{i:04d}" for i in range(1000)]  # two chunks of NODE_CHUNK
    with transaction(prep.engine) as session:
        session.add_all([Node(name=n, state="up") for n in names])
        record_submitted_manifest(session, manifest)
        job = record_job(session, scheduler="local", uid=os.getuid(), manifest_id=manifest_id)
        session.flush()
        rows = {r.name: r for r in session.scalars(select(Node))}
        session.add(CacheEntry(node_id=rows["n0007"].id, object_sha256=SHA))  # had it already
        session.flush()
        statements: list[str] = []
        listen = event.listens_for(prep.engine, "before_cursor_execute")
        listen(lambda *args: statements.append(args[2]))
        fill = FillReport(1, 0, 9, 9, 0, 0.1)
        accept(session, job, {n: (rows[n], fill) for n in names}, [SHA])
    with transaction(prep.engine, readonly=True) as session:
        assert session.scalar(select(func.count()).select_from(JobNode)) == 1000
        assert session.scalar(select(func.count()).select_from(CacheEntry)) == 1000
        assert session.scalar(select(func.count()).select_from(CachePin)) == 1000
    assert len(statements) < 20, statements
    prep.engine.dispose()
