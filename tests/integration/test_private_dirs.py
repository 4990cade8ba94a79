"""Other users on a node or the master cannot read a user's files through Beolaunch's
own directories: the store, a node cache, and the roots of that user's jobs (issue 12,
item 2a). Two real users, real FUSE roots, real permission checks by the kernel.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cachefs.cache import NodeCache
from cachefs.dirsource import DirectorySource
from cachefs.snapshot import snapshot
from cachefs.store import Store
from launcher.errors import EnvRootError
from launcher.node.roots.envroot import EnvRoot
from launcher.node.roots.userdirs import prepare_roots_dir, user_dir

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None or not os.path.exists("/dev/fuse"),
    reason="needs root, useradd and /dev/fuse",
)


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path


def _add(name: str) -> User:
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True)
    uid = int(subprocess.run(["id", "-u", name], capture_output=True, check=True).stdout)
    gid = int(subprocess.run(["id", "-g", name], capture_output=True, check=True).stdout)
    return User(name, uid, gid, Path(f"/home/{name}"))


@pytest.fixture(scope="module")
def users() -> Iterator[tuple[User, User]]:
    tag = secrets.token_hex(3)
    made = [_add(f"beova{tag}"), _add(f"beovm{tag}")]
    try:
        yield made[0], made[1]
    finally:
        for u in made:
            subprocess.run(["userdel", "-r", u.name], capture_output=True, check=False)


def _reads(user: User, path: Path) -> bool:
    """Whether ``user`` can read ``path`` (cat as that user)."""
    done = subprocess.run(["runuser", "-u", user.name, "--", "cat", str(path)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def top() -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="beo-priv-"))
    where.chmod(0o755)  # as a state dir is: users may pass
    try:
        yield where
    finally:
        for point in reversed(sorted(p.path for p in _mounts_under(where))):
            subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(where, ignore_errors=True)


@dataclass(frozen=True)
class _Mount:
    path: str


def _mounts_under(where: Path) -> list[_Mount]:
    with open("/proc/self/mounts", encoding="utf-8") as f:
        return [_Mount(line.split()[1]) for line in f if line.split()[1].startswith(str(where))]


def test_store_and_cache_objects_are_root_only(users: tuple[User, User], top: Path) -> None:
    alice, mallory = users
    secret = alice.home / "secret"
    secret.write_bytes(b"alice's 0600 secret\n")
    os.chown(secret, alice.uid, alice.gid)
    secret.chmod(0o600)
    store = Store(top / "store")
    digest, _ = store.ingest(secret)
    with NodeCache(top / "cache", 1 << 20) as cache:
        asyncio.run(cache.fill({digest: secret.stat().st_size}, [DirectorySource(store.root)]))
        cached = cache.object_path(digest)
    for path in (store.path(digest), cached):
        assert path.read_bytes() == b"alice's 0600 secret\n"
        assert not _reads(mallory, path), f"{mallory.name} read {path}"
        assert not _reads(alice, path)  # only through a job of hers, never directly
    assert (top / "store").stat().st_mode & 0o777 == 0o700
    assert (top / "cache").stat().st_mode & 0o777 == 0o700


def test_an_existing_open_store_is_tightened(top: Path) -> None:
    (top / "store").mkdir(mode=0o755)
    (top / "store").chmod(0o755)
    Store(top / "store")
    assert (top / "store").stat().st_mode & 0o777 == 0o700


def test_a_root_from_a_private_home_is_reachable_by_its_user_only(
    users: tuple[User, User], top: Path
) -> None:
    alice, mallory = users
    prog = alice.home / "bin" / "prog"
    prog.parent.mkdir(exist_ok=True)
    prog.write_text("#!/bin/sh\necho alice's program\n")
    prog.chmod(0o755)
    alice.home.chmod(0o700)
    store = Store(top / "store")
    manifest = snapshot(str(prog), [str(prog)], store, owner=alice.uid)
    roots = top / "roots"
    prepare_roots_dir(roots)
    with NodeCache(top / "cache", 1 << 20) as cache:
        asyncio.run(cache.fill(manifest.objects(), [DirectorySource(store.root)], job="1"))
        where = user_dir(roots, alice.uid, alice.gid, job="1")
        root = EnvRoot.create(manifest, cache, where, "1", variant="fuse")
        try:
            shown = root.path / str(prog).lstrip("/")
            assert _reads(alice, shown)  # a Slurm step enters as alice, through the ACL
            assert not _reads(mallory, shown), f"{mallory.name} read alice's program"
            listing = subprocess.run(
                ["runuser", "-u", alice.name, "--", "ls", str(roots)], capture_output=True
            )
            assert listing.returncode != 0  # nobody lists the roots dir
        finally:
            root.remove()


def test_a_users_dir_that_is_not_the_agents_is_refused(users: tuple[User, User], top: Path) -> None:
    alice, _ = users
    roots = top / "roots"
    prepare_roots_dir(roots)
    elsewhere = top / "elsewhere"
    elsewhere.mkdir()
    (roots / f"u{alice.uid}").symlink_to(elsewhere)
    with pytest.raises(EnvRootError, match="not a directory of the agent's"):
        user_dir(roots, alice.uid, alice.gid, job="2")
