"""bootsvc.newc: the writer's fixed fields, and reading an archive back."""

from __future__ import annotations

import stat

import pytest

from bootsvc import newc
from bootsvc.errors import Stage2BuildError


def test_entries_are_sorted_numbered_and_owned_by_root() -> None:
    archive = newc.write(
        [newc.regular("b/f", b"hello"), newc.directory("b"), newc.symlink("a", "b/f")], mtime=7
    )
    members = newc.read(archive)
    assert [m.entry.path for m in members] == ["a", "b", "b/f"]
    assert [m.ino for m in members] == [1, 2, 3]
    assert {(m.uid, m.gid, m.mtime) for m in members} == {(0, 0, 7)}
    assert [m.nlink for m in members] == [1, 2, 1]
    assert members[0].entry.data == b"b/f" and stat.S_ISLNK(members[0].entry.mode)
    assert members[2].entry.data == b"hello"


def test_header_and_padding_follow_the_kernel_format() -> None:
    archive = newc.write([newc.regular("x", b"abc")])
    assert archive.startswith(b"070701")
    # 110-byte header + "x\0" padded to 112, data 3 bytes padded to 4.
    assert archive[110:112] == b"x\0"
    assert archive[112:116] == b"abc\0"
    assert archive[116:122] == b"070701"
    assert len(archive) % 4 == 0
    assert b"TRAILER!!!\0" in archive[116:]


def test_device_numbers_survive_a_round_trip() -> None:
    (member,) = newc.read(newc.write([newc.char_device("dev/console", 5, 1)]))
    assert stat.S_ISCHR(member.entry.mode) and member.entry.rdev == (5, 1)


def test_input_order_does_not_change_the_bytes() -> None:
    files = [newc.regular(f"f{i}", bytes([i]) * i) for i in range(9)]
    assert newc.write(files) == newc.write(reversed(files))


@pytest.mark.parametrize("paths", [["a", "a"], ["/abs"], [""]])
def test_bad_paths_are_refused(paths: list[str]) -> None:
    with pytest.raises(Stage2BuildError) as caught:
        newc.write([newc.regular(path, b"") for path in paths])
    assert caught.value.value in paths


def test_reading_garbage_is_refused() -> None:
    with pytest.raises(Stage2BuildError, match="070701"):
        newc.read(b"not a cpio archive at all" * 10)
