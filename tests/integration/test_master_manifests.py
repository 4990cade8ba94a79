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
