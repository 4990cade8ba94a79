"""A damaged object in the master's store is found, quarantined and ingested again
as the job's user (storerepair.py), on real files with a real user."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachefs.snapshot import snapshot
from cachefs.store import Store
from launcher.master.storerepair import check_and_repair

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None, reason="needs root and useradd"
)


@pytest.fixture
def prog(user: pwd.struct_passwd) -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="beo-repair-"))
    top.chmod(0o755)
    path = top / "prog"
    path.write_bytes(b"#!/bin/sh\necho the real one\n")
    os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(0o700)  # the user's alone: the repair must read it as the user
    try:
        yield path
    finally:
        shutil.rmtree(top)


def _damage(store: Store, sha: str) -> None:
    path = store.path(sha)
    path.chmod(0o644)
    path.write_bytes(b"#!/bin/sh\necho tampered\n")


def test_a_sound_copy_is_left_alone(tmp_path: Path, user: pwd.struct_passwd, prog: Path) -> None:
    store = Store(tmp_path / "store")
    manifest = snapshot(str(prog), [str(prog)], store, owner=user.pw_uid)
    [sha] = manifest.objects()
    found = check_and_repair(store, sha, manifest, user.pw_uid)
    assert (found.damaged, found.repaired) == (False, False)
    assert not (store.root / "quarantine").exists()


def test_a_damaged_copy_is_quarantined_and_ingested_again_as_the_user(
    tmp_path: Path, user: pwd.struct_passwd, prog: Path
) -> None:
    store = Store(tmp_path / "store")
    manifest = snapshot(str(prog), [str(prog)], store, owner=user.pw_uid)
    [sha] = manifest.objects()
    _damage(store, sha)
    found = check_and_repair(store, sha, manifest, user.pw_uid)
    assert (found.damaged, found.repaired) == (True, True), found
    assert f"ingested again from {prog}" in found.message
    assert store.path(sha).read_bytes() == prog.read_bytes()
    [kept] = (store.root / "quarantine").iterdir()
    assert kept.read_bytes() == b"#!/bin/sh\necho tampered\n"


def test_without_a_file_of_that_content_the_job_is_told_to_resubmit(
    tmp_path: Path, user: pwd.struct_passwd, prog: Path
) -> None:
    store = Store(tmp_path / "store")
    manifest = snapshot(str(prog), [str(prog)], store, owner=user.pw_uid)
    [sha] = manifest.objects()
    _damage(store, sha)
    prog.write_bytes(b"#!/bin/sh\necho a newer version\n")
    found = check_and_repair(store, sha, manifest, user.pw_uid)
    assert (found.damaged, found.repaired) == (True, False)
    assert "submit the job again" in found.message
    assert not store.has(sha)  # never served damaged again


def test_another_user_cannot_have_it_ingested_from_a_file_they_cannot_read(
    tmp_path: Path, user: pwd.struct_passwd, prog: Path
) -> None:
    store = Store(tmp_path / "store")
    manifest = snapshot(str(prog), [str(prog)], store, owner=user.pw_uid)
    [sha] = manifest.objects()
    _damage(store, sha)
    nobody = pwd.getpwnam("nobody").pw_uid
    found = check_and_repair(store, sha, manifest.with_owner(nobody), nobody)
    assert (found.damaged, found.repaired) == (True, False)
