"""The environment root's core: lookups, synthesized parents, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachefs.errors import (
    ManifestError,
    ViewNotADirectory,
    ViewNotASymlink,
    ViewNotFound,
    ViewTreeError,
)
from cachefs.manifest import Entry, build
from cachefs.view.tree import SYNTHESIZED_DIR_MODE, DirNode, FileNode, SymlinkNode, Tree

SHA_A = "a" * 64
SHA_B = "b" * 64


def objects(sha: str) -> Path:
    return Path("/cache/objects") / sha[:2] / sha


def tree(*entries: Entry) -> Tree:
    return Tree.from_manifest(build("/usr/bin/prog", entries), objects)


@pytest.fixture
def usr() -> Tree:
    return tree(
        Entry("/usr/bin/prog", "file", 0o755, 10, SHA_A),
        Entry("/usr/lib/x86_64-linux-gnu/libz.so.1.2.13", "file", 0o644, 20, SHA_B),
        Entry("/usr/lib/x86_64-linux-gnu/libz.so.1", "symlink", 0o777, target="libz.so.1.2.13"),
        Entry("/usr/lib", "dir", 0o700),
        Entry("/lib", "symlink", 0o777, target="usr/lib"),
    )


def test_files_carry_size_mode_and_backing_object(usr: Tree) -> None:
    node = usr.lookup("/usr/bin/prog")
    assert node == FileNode("/usr/bin/prog", 0o755, node.ino, 10, SHA_A, objects(SHA_A))


def test_missing_parents_are_synthesized_with_0755(usr: Tree) -> None:
    root = usr.lookup("/")
    assert isinstance(root, DirNode) and root.synthesized
    assert root.children == ("lib", "usr")
    usr_dir = usr.directory("/usr")
    assert (usr_dir.mode, usr_dir.synthesized, usr_dir.children) == (
        SYNTHESIZED_DIR_MODE,
        True,
        ("bin", "lib"),
    )
    assert usr.directory("/usr/lib/x86_64-linux-gnu").children == ("libz.so.1", "libz.so.1.2.13")


def test_listed_directories_keep_their_mode(usr: Tree) -> None:
    lib = usr.directory("/usr/lib")
    assert (lib.mode, lib.synthesized, lib.subdirs) == (0o700, False, 1)
    assert usr.directory("/usr").subdirs == 2


def test_symlinks_are_presented_not_followed(usr: Tree) -> None:
    assert usr.lookup("/lib") == SymlinkNode("/lib", 0o777, usr.lookup("/lib").ino, "usr/lib")
    assert usr.readlink("/usr/lib/x86_64-linux-gnu/libz.so.1") == "libz.so.1.2.13"
    with pytest.raises(ViewNotADirectory) as info:
        usr.lookup("/lib/x86_64-linux-gnu/libz.so.1")
    assert info.value.component == "/lib"


def test_missing_path_is_not_found(usr: Tree) -> None:
    with pytest.raises(ViewNotFound) as info:
        usr.lookup("/usr/lib/libnothere.so")
    assert info.value.path == "/usr/lib/libnothere.so"
    with pytest.raises(ViewNotFound):
        usr.lookup("/etc/hostname")


def test_walking_through_a_file_is_not_a_directory(usr: Tree) -> None:
    with pytest.raises(ViewNotADirectory) as info:
        usr.lookup("/usr/bin/prog/x/y")
    assert (info.value.path, info.value.component) == ("/usr/bin/prog/x/y", "/usr/bin/prog")
    with pytest.raises(ViewNotADirectory):
        usr.directory("/usr/bin/prog")


def test_readlink_of_a_file_is_refused(usr: Tree) -> None:
    with pytest.raises(ViewNotASymlink):
        usr.readlink("/usr/bin/prog")


def test_inodes_are_unique_and_parents_come_first(usr: Tree) -> None:
    nodes = list(usr)
    assert len({n.ino for n in nodes}) == len(nodes) == len(usr) == 9
    seen: set[str] = set()
    for n in nodes:
        assert n.path == "/" or (n.path.rsplit("/", 1)[0] or "/") in seen
        seen.add(n.path)
    assert usr.total_size() == 30


def test_an_entry_under_a_symlink_is_refused() -> None:
    # The manifest refuses it before a tree is built (issue 12: root seeding a
    # job's /tmp would follow the link); the tree's own check stays behind it.
    with pytest.raises(ManifestError) as info:
        tree(
            Entry("/lib", "symlink", 0o777, target="usr/lib"),
            Entry("/lib/libc.so.6", "file", 0o755, 1, SHA_A),
        )
    assert info.value.path == "/lib/libc.so.6"


def test_a_root_that_is_not_a_directory_is_refused() -> None:
    with pytest.raises(ViewTreeError):
        tree(Entry("/", "symlink", 0o777, target="/usr"))


def test_an_explicit_root_directory_keeps_its_mode() -> None:
    t = tree(Entry("/", "dir", 0o711), Entry("/x", "file", 0o644, 0, SHA_A))
    assert t.directory("/").mode == 0o711
    assert not t.directory("/").synthesized


def test_an_empty_manifest_is_an_empty_root() -> None:
    t = tree()
    assert t.directory("/").children == ()
    assert len(t) == 1


def test_mountpoints_are_empty_directories_unless_the_manifest_fills_them(usr: Tree) -> None:
    t = Tree.from_manifest(usr.manifest, objects, mountpoints=["/proc", "/usr/lib", "/dev/pts"])
    assert t.directory("/").children == ("dev", "lib", "proc", "usr")
    assert t.directory("/proc").children == ()
    assert t.directory("/dev").children == ("pts",)
    assert t.directory("/usr/lib").mode == 0o700  # listed: kept as the manifest says
    assert t.mountpoints == ("/proc", "/usr/lib", "/dev/pts")


def test_a_mountpoint_on_a_symlink_is_refused(usr: Tree) -> None:
    with pytest.raises(ViewTreeError):
        Tree.from_manifest(usr.manifest, objects, mountpoints=["/lib"])


def test_mtimes_override_the_single_timestamp_per_path(usr: Tree) -> None:
    t = Tree.from_manifest(
        usr.manifest, objects, mtime_ns=7, mtimes={"/usr/bin/prog": 1_700_000_000_123_456_789}
    )
    assert t.lookup("/usr/bin/prog").mtime_ns == 1_700_000_000_123_456_789
    assert t.lookup("/usr").mtime_ns == t.lookup("/lib").mtime_ns == 7


def test_mtimes_recorded_in_the_manifest_are_shown() -> None:
    recorded = 1_700_000_000_000_000_001
    t = Tree.from_manifest(
        build("/a", [Entry("/a", "file", 0o755, 1, "b" * 64, mtime=recorded)]), objects, mtime_ns=7
    )
    assert t.lookup("/a").mtime_ns == recorded
    assert t.lookup("/").mtime_ns == 7
