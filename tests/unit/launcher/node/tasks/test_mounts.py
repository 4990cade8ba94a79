"""mounts' path helpers: what a bind hides, and opening a bind's source as root."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from launcher.node.tasks.mounts import open_trusted_dir, submitted_under, under


def test_under() -> None:
    assert under("/scratch", "/scratch") and under("/scratch/a", "/scratch")
    assert not under("/scratchy", "/scratch") and not under("/", "/scratch")
    assert under("/anything", "/")


def test_submitted_under_gives_paths_relative_to_the_bind() -> None:
    files = ["/scratch/u/prog", "/scratchy/x", "/scratch/lib/a.so", "/usr/bin/sh"]
    assert submitted_under(files, "/scratch") == ["u/prog", "lib/a.so"]
    assert submitted_under(files, "/home") == []


def _target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="a symlink owned by a user is made with lchown")
def test_open_trusted_dir_follows_only_roots_symlinks(tmp_path: Path) -> None:
    real = tmp_path / "real" / "dir"
    real.mkdir(parents=True)
    (tmp_path / "abs").symlink_to(real)
    (tmp_path / "rel").symlink_to("real/../real/dir")
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "planted").symlink_to(real)
    os.lchown(tmp_path / "planted", 4321, 4321)
    assert _target(open_trusted_dir(str(real))) == str(real)
    assert _target(open_trusted_dir(str(tmp_path / "abs"))) == str(real)
    assert _target(open_trusted_dir(str(tmp_path / "rel") + "/")) == str(real)
    for bad, code in (("planted", errno.ELOOP), ("loop", errno.ELOOP), ("nope", errno.ENOENT)):
        with pytest.raises(OSError) as info:
            open_trusted_dir(str(tmp_path / bad))
        assert info.value.errno == code, bad
    with pytest.raises(OSError, match="not owned by root"):
        open_trusted_dir(str(tmp_path / "planted"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        open_trusted_dir(str(tmp_path / "file"))
