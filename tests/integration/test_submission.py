"""The master stores only what the submitting user can read, exactly as the user hashed it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachefs.snapshot import snapshot
from cachefs.store import Store
from launcher.submission import SubmissionError, ingest_submission


@pytest.fixture
def user() -> Iterator[pwd.struct_passwd]:
    name = f"beot{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=True)


@pytest.fixture
def files() -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="beo-sub-"))
    top.chmod(0o755)
    (top / "mine").write_bytes(b"readable by everyone" * 10)
    (top / "secret").write_bytes(b"root only")
    (top / "secret").chmod(0o600)
    try:
        yield top
    finally:
        shutil.rmtree(top)


def _ingest(store: Store, manifest_paths: list[str], who: pwd.struct_passwd) -> int:
    manifest = snapshot(manifest_paths[0], manifest_paths, None, owner=who.pw_uid)
    return ingest_submission(store, manifest, who.pw_uid, who.pw_gid, []).objects_new


def test_readable_file_is_stored(tmp_path: Path, files: Path, user: pwd.struct_passwd) -> None:
    store = Store(tmp_path / "store")
    assert _ingest(store, [str(files / "mine")], user) == 1
    assert len(list(store.objects())) == 1


def test_file_the_user_cannot_read_is_refused(
    tmp_path: Path, files: Path, user: pwd.struct_passwd
) -> None:
    store = Store(tmp_path / "store")
    with pytest.raises(SubmissionError, match=rf"secret: cannot be opened by uid {user.pw_uid}"):
        _ingest(store, [str(files / "mine"), str(files / "secret")], user)
    assert b"root only" not in b"".join(store.path(s).read_bytes() for s, _ in store.objects())


def test_symlink_swapped_in_after_hashing_is_refused(
    tmp_path: Path, files: Path, user: pwd.struct_passwd
) -> None:
    # The user hashes a file they own, then swaps it for a link to a root-only file.
    store = Store(tmp_path / "store")
    bait = files / "bait"
    bait.write_bytes(b"root only")  # same content as the secret: same digest
    manifest = snapshot(str(bait), [str(bait)], None, owner=user.pw_uid)
    bait.unlink()
    os.symlink(files / "secret", bait)
    with pytest.raises(SubmissionError, match="bait: is a symbolic link now, not the file"):
        ingest_submission(store, manifest, user.pw_uid, user.pw_gid, [])
    assert list(store.objects()) == []


def test_changed_file_is_refused(tmp_path: Path, files: Path, user: pwd.struct_passwd) -> None:
    store = Store(tmp_path / "store")
    manifest = snapshot(str(files / "mine"), [str(files / "mine")], None, owner=user.pw_uid)
    (files / "mine").write_bytes(b"a new version")
    with pytest.raises(SubmissionError, match="changed since it was hashed"):
        ingest_submission(store, manifest, user.pw_uid, user.pw_gid, [])
    assert list(store.objects()) == []
