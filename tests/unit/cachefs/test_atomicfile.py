"""Replacing a file whole: the mode and owner asked, the old content kept on a
failure halfway, and no temporary file left either way."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cachefs import atomicfile
from cachefs.atomicfile import replace_if_changed, write_atomic


def test_the_file_is_replaced_with_the_mode_asked_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "conf"
    target.write_text("old\n")
    old_umask = os.umask(0o077)
    try:
        write_atomic(target, "new\n", mode=0o644)
    finally:
        os.umask(old_umask)
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["conf"]


def test_a_secret_is_written_0600_as_bytes(tmp_path: Path) -> None:
    target = tmp_path / "token"
    write_atomic(target, b"\x00secret", mode=0o600)
    assert target.read_bytes() == b"\x00secret"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_the_owner_is_set_when_asked(tmp_path: Path) -> None:
    target = tmp_path / "owned"
    owner = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    write_atomic(target, "x", owner=owner)
    st = target.stat()
    assert (st.st_uid, st.st_gid) == owner


@pytest.mark.parametrize("failing", ["write", "fsync"])
def test_a_write_failing_halfway_keeps_the_old_content_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    target = tmp_path / "state.json"
    target.write_text('{"old": true}')
    real_write = os.write

    def half_then_full(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 4:
            return real_write(fd, bytes(data[:4]))  # a short write: the helper goes on
        raise OSError(28, "No space left on device")

    def no_fsync(_fd: int) -> None:
        raise OSError(5, "Input/output error")

    if failing == "write":
        monkeypatch.setattr(atomicfile.os, "write", half_then_full)
    else:
        monkeypatch.setattr(atomicfile.os, "fsync", no_fsync)
    with pytest.raises(OSError):
        write_atomic(target, '{"new": true, "longer": "than four bytes"}')
    monkeypatch.undo()
    assert target.read_text() == '{"old": true}'
    assert os.listdir(tmp_path) == ["state.json"]


def test_the_temporary_file_can_live_in_another_directory(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    write_atomic(tmp_path / "pins.json", "{}", tmp_dir=tmp_path / "tmp")
    assert (tmp_path / "pins.json").read_text() == "{}"
    assert os.listdir(tmp_path / "tmp") == []


def test_replace_if_changed_leaves_the_same_content_alone(tmp_path: Path) -> None:
    target = tmp_path / "dnsmasq.conf"
    assert replace_if_changed(target, "a\n") is True
    inode = target.stat().st_ino
    assert replace_if_changed(target, b"a\n", mode=0o600) is False
    assert target.stat().st_ino == inode
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert replace_if_changed(target, "b\n") is True
    assert target.read_text() == "b\n" and target.stat().st_ino != inode
