"""The master stores only what the submitting user can read, exactly as the user hashed it."""

from __future__ import annotations

import concurrent.futures
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachefs.manifest import Entry, Manifest, build
from cachefs.snapshot import snapshot
from cachefs.store import Store
from launcher.errors import SubmissionError
from launcher.readproof import SeenFiles
from launcher.submission import ingest_submission


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


def _forged(path: Path, sha256: str, size: int, owner: int) -> Manifest:
    return build(str(path), [Entry(str(path), "file", 0o755, size, sha256)], owner)


def test_naming_a_digest_the_store_holds_proves_nothing(
    tmp_path: Path, files: Path, user: pwd.struct_passwd
) -> None:
    # Issue 12: another user's 0600 file is in the store (root submitted it); its
    # sha256 is public (beoacct, the state db). A manifest naming it must not pass.
    store = Store(tmp_path / "store")
    secret = files / "secret"
    digest, size = store.ingest(secret)
    mine = files / "mine"
    for path in (secret, mine, files / "missing"):
        with pytest.raises(SubmissionError, match=str(path)):
            ingest_submission(
                store, _forged(path, digest, size, user.pw_uid), user.pw_uid, user.pw_gid, []
            )
    # Same size as the secret, other bytes, readable: still refused.
    decoy = files / "decoy"
    decoy.write_bytes(b"x" * size)
    with pytest.raises(SubmissionError, match="does not hold the content"):
        ingest_submission(
            store, _forged(decoy, digest, size, user.pw_uid), user.pw_uid, user.pw_gid, []
        )


def test_a_fifo_is_refused_without_blocking(
    tmp_path: Path, files: Path, user: pwd.struct_passwd
) -> None:
    store = Store(tmp_path / "store")
    fifo = files / "fifo"
    os.mkfifo(fifo, 0o666)
    manifest = _forged(fifo, "a" * 64, 10, user.pw_uid)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(ingest_submission, store, manifest, user.pw_uid, user.pw_gid, [])
        with pytest.raises(SubmissionError, match="not a regular file"):
            future.result(timeout=30)


def test_an_unchanged_file_is_not_hashed_again_and_a_changed_one_is(
    tmp_path: Path, files: Path, user: pwd.struct_passwd, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "store")
    mine = files / "mine"
    manifest = snapshot(str(mine), [str(mine)], None, owner=user.pw_uid)
    seen = SeenFiles()
    assert ingest_submission(store, manifest, user.pw_uid, user.pw_gid, [], seen).objects_new == 1
    assert len(seen) == 1
    # Stored and seen: the warm path opens the file as the user but reads nothing.
    import launcher.submission as submission

    def no_hash(*_a: object, **_k: object) -> None:
        raise AssertionError("hashed a file whose fstat is unchanged")

    monkeypatch.setattr(submission, "hash_file", no_hash)
    assert ingest_submission(store, manifest, user.pw_uid, user.pw_gid, [], seen).objects_new == 0
    monkeypatch.undo()
    # Rewritten with the same size and its mtime set back: ctime moved, so it is
    # hashed again, and refused.
    st = mine.stat()
    mine.write_bytes(b"R" * st.st_size)
    os.utime(mine, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(SubmissionError, match="does not hold the content"):
        ingest_submission(store, manifest, user.pw_uid, user.pw_gid, [], seen)


def test_losing_read_access_refuses_a_later_submission(
    tmp_path: Path, files: Path, user: pwd.struct_passwd
) -> None:
    store = Store(tmp_path / "store")
    mine = files / "mine"
    manifest = snapshot(str(mine), [str(mine)], None, owner=user.pw_uid)
    seen = SeenFiles()
    ingest_submission(store, manifest, user.pw_uid, user.pw_gid, [], seen)
    mine.chmod(0o600)  # root's now: the stored object and the seen entry change nothing
    with pytest.raises(SubmissionError, match="cannot be opened"):
        ingest_submission(store, manifest, user.pw_uid, user.pw_gid, [], seen)


def test_a_forged_size_is_refused_before_anything_is_read(
    tmp_path: Path, files: Path, user: pwd.struct_passwd
) -> None:
    # Issue 12: a size of 99999999999999 bytes drained every node it landed on.
    store = Store(tmp_path / "store")
    mine = files / "mine"
    manifest = _forged(mine, "a" * 64, 99999999999999, user.pw_uid)
    with pytest.raises(SubmissionError, match="the manifest says 99999999999999"):
        ingest_submission(store, manifest, user.pw_uid, user.pw_gid, [])
    assert list(store.objects()) == []
