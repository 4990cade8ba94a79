"""``POST /manifests`` on the real master's user socket: what beosub does before sbatch.

Uses test_master's master (a real ``beoctl master serve`` in a state dir of its
own, root allowed to submit).
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from cachefs.store import Store
from launcher.errors import MasterError
from launcher.master.client import BlockingClient
from launcher.state.db import transaction
from launcher.state.models import Job
from launcher.state.models import Manifest as ManifestRow
from tests.integration.test_master import (  # noqa: F401  (fixtures)
    Master,
    _db,
    _manifest,
    initialized,
    master,
    pytestmark,
)


def test_stores_objects_and_manifest_without_a_job(master: Master) -> None:  # noqa: F811
    manifest = _manifest(master, owner=0)
    got = BlockingClient(master.sock).store_manifest(manifest.document())
    assert got == manifest.id
    store = Store(master.config.store_dir)
    assert all(store.has(sha) for sha in manifest.objects())
    engine = _db(master)
    with transaction(engine, readonly=True) as session:
        row = session.get_one(ManifestRow, got)
        assert (row.owner_uid, row.root_program) == (0, manifest.root)
        assert session.scalars(select(Job)).all() == []
    engine.dispose()
    # Storing it again is the same answer (beosub resubmitting the same closure).
    assert asyncio.run(master.client().store_manifest(manifest.document())) == got


def test_a_manifest_owned_by_someone_else_is_refused(master: Master) -> None:  # noqa: F811
    manifest = _manifest(master, owner=1000)
    with pytest.raises(MasterError) as caught:
        BlockingClient(master.sock).store_manifest(manifest.document())
    assert caught.value.status == 403 and "uid 1000" in str(caught.value)
    engine = _db(master)
    with transaction(engine, readonly=True) as session:
        assert session.get(ManifestRow, manifest.id) is None
    engine.dispose()


@pytest.mark.parametrize("path", ["/jobs", "/manifests"])
def test_a_forged_manifest_with_entries_under_a_symlink_is_refused(
    master: Master,  # noqa: F811
    path: str,
) -> None:
    # Issue 12's attack: /tmp a dir, /tmp/a -> any directory, entries under /tmp/a,
    # so that root seeding the job's /tmp on a node would write there. Refused at
    # the master, on the embedded path (POST /jobs) and the Slurm path alike.
    base = _manifest(master, owner=0).document()
    base["entries"] += [
        {"path": "/tmp", "kind": "dir", "mode": 0o1777},
        {"path": "/tmp/a", "kind": "symlink", "mode": 0o777, "target": "/etc"},
        {"path": "/tmp/a/ld.so.preload.d", "kind": "dir", "mode": 0o755},
    ]
    for entry in base["entries"]:
        for key in ("size", "sha256", "target"):
            entry.setdefault(key, None)
    engine = _db(master)
    with transaction(engine, readonly=True) as session:
        before = (
            len(session.scalars(select(Job)).all()),
            len(session.scalars(select(ManifestRow)).all()),
        )
    client = BlockingClient(master.sock)
    with pytest.raises(MasterError) as caught:
        if path == "/jobs":
            client.submit(argv=["/bin/prog"], env={}, cwd="/", nodes=1, tasks=1, manifest=base)
        else:
            client.store_manifest(base)
    assert caught.value.status == 400
    assert "under the symlink /tmp/a" in str(caught.value)
    with transaction(engine, readonly=True) as session:
        after = (
            len(session.scalars(select(Job)).all()),
            len(session.scalars(select(ManifestRow)).all()),
        )
    engine.dispose()
    assert after == before
