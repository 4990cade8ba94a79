"""``open_as`` (launcher.submission) and its helper (launcher.opener), run for real as
another user: every reply lands on its own path, and a symbolic link is told
apart from a loop of links on the way."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from launcher.master.batch import _problem
from launcher.submission import open_as

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="opens files as another user")


def test_every_reply_lands_on_its_own_path(top: Path, user: pwd.struct_passwd) -> None:
    """Errors in a row were merged into one reply on the old stream socket: a path got
    the next one's error, and every later path the fd of the path after it."""
    (top / "secret").write_bytes(b"root only")
    (top / "secret").chmod(0o600)
    paths: list[str] = []
    expected: dict[str, bytes | str] = {}
    for i in range(150):
        missing, secret, mine = str(top / f"missing{i}"), str(top / "secret"), str(top / f"f{i}")
        Path(mine).write_bytes(f"file {i}".encode())
        for path, want in ((missing, "ENOENT"), (mine, f"file {i}".encode())):
            paths.append(path)
            expected[path] = want
        if i % 3 == 0:
            paths.append(secret)
            expected[secret] = "EACCES"
    got = open_as(user.pw_uid, user.pw_gid, [], paths)
    try:
        seen = {p: (os.pread(v, 100, 0) if isinstance(v, int) else v) for p, v in got.items()}
    finally:
        for v in got.values():
            if isinstance(v, int):
                os.close(v)
    assert seen == expected


def test_a_symlink_is_told_apart_from_a_loop(top: Path, user: pwd.struct_passwd) -> None:
    (top / "target").write_bytes(b"x")
    (top / "link").symlink_to(top / "target")
    (top / "a").symlink_to(top / "b")
    (top / "b").symlink_to(top / "a")
    got = open_as(user.pw_uid, user.pw_gid, [], [str(top / "link"), str(top / "a" / "x")])
    assert got == {str(top / "link"): "SYMLINK", str(top / "a" / "x"): "ELOOP"}
    # what a batch job's failure says of each
    assert _problem("SYMLINK").startswith("it is a symbolic link; refused")
    assert "too many symbolic links on its path" in _problem("ELOOP")
    out = open_as(user.pw_uid, user.pw_gid, [], [str(top / "link")], append=True)
    assert out == {str(top / "link"): "SYMLINK"}
