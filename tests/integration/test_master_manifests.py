"""``POST /manifests`` on the real master's user socket: what beosub does before sbatch.

Uses test_master's master (a real ``beoctl master serve`` in a state dir of its
own, root allowed to submit).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable

import aiohttp
import pytest
from sqlalchemy import select

from cachefs.manifest import Manifest
from cachefs.snapshot import snapshot
from cachefs.store import Store
from launcher.errors import MasterError
from launcher.master.client import BlockingClient
from launcher.state.db import transaction
from launcher.state.models import Job, Node
from launcher.state.models import Manifest as ManifestRow
from tests.integration.test_master import (  # noqa: F401  (fixtures)
    QUOTA,
    Master,
    _db,
    _manifest,
    _node,
    initialized,
    master,
    pytestmark,
)


def test_stores_objects_and_manifest_without_a_job(master: Master) -> None:  # noqa: F811
    manifest = _manifest(master, owner=0)
    got = BlockingClient(master.sock).store_manifest(manifest.document())
    store = Store(master.config.store_dir)
    assert all(store.has(sha) for sha in manifest.objects())
    # The id is the stored manifest's: the user's files with the master's /etc.
    with store.open(got) as f:
        stored = Manifest.from_document(json.loads(f.read()), expect_id=got)
    assert all(stored.get(e.path) == e for e in manifest) and stored.owner == 0
    assert stored.get("/etc/passwd") is not None and got != manifest.id
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


def test_files_bigger_than_every_node_cache_are_refused_before_anything_is_stored(
    master: Master,  # noqa: F811
) -> None:
    # Issue 12: such a job drained every node it landed on. The connected node's
    # hello says its cache holds 1 GiB; the manifest needs 2 GiB.
    doc = _manifest(master, owner=0).document()
    doc["entries"][0]["size"] = 2 << 30
    doc["entries"][0]["sha256"] = "d" * 64

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            node = await _node(master, session, "node1")
            try:
                await asyncio.to_thread(poll_until, lambda: _node_up(master, "node1"), "node1 up")
                with pytest.raises(MasterError) as caught:
                    await master.client().store_manifest(doc)
                assert caught.value.status == 413
                assert "more than any node's cache holds" in str(caught.value)
            finally:
                await node.close()

    asyncio.run(scenario())
    assert not Store(master.config.store_dir).has("d" * 64)


def test_the_store_quota_refuses_new_bytes_past_it(master: Master) -> None:  # noqa: F811
    big = master.config.state_dir.parent / "big.bin"
    big.write_bytes(os.urandom(QUOTA + 1))
    manifest = snapshot(str(big), [str(big)], None, owner=0)
    with pytest.raises(MasterError) as caught:
        BlockingClient(master.sock).store_manifest(manifest.document())
    assert caught.value.status == 413 and "quota" in str(caught.value)
    assert not any(Store(master.config.store_dir).has(s) for s in manifest.objects())


def _node_up(m: Master, name: str) -> bool:
    engine = _db(m)
    try:
        with transaction(engine, readonly=True) as session:
            node = session.scalars(select(Node).where(Node.name == name)).one()
            return node.state == "up"
    finally:
        engine.dispose()


def poll_until(check: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:g} s")
        time.sleep(0.1)
