"""Symlink chains: every link met on the way, '..' taken physically."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cachefs.closure.session import Session
from cachefs.errors import ClosureError


def test_chain_records_each_link_and_ends_at_the_file(tmp_path: Path) -> None:
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/libx.so.1.0").write_bytes(b"x")
    os.symlink("libx.so.1.0", tmp_path / "usr/lib/libx.so.1")
    os.symlink("libx.so.1", tmp_path / "usr/lib/libx.so")
    os.symlink("usr/lib", tmp_path / "lib")  # a directory link, relative
    os.symlink(str(tmp_path / "lib"), tmp_path / "lib64")  # absolute, to a link
    links, final = Session().chain(f"{tmp_path}/lib64/libx.so")
    assert links == [
        f"{tmp_path}/lib64",
        f"{tmp_path}/lib",
        f"{tmp_path}/usr/lib/libx.so",
        f"{tmp_path}/usr/lib/libx.so.1",
    ]
    assert final == f"{tmp_path}/usr/lib/libx.so.1.0"


def test_dotdot_is_physical(tmp_path: Path) -> None:
    (tmp_path / "real/sub").mkdir(parents=True)
    (tmp_path / "real/target").write_bytes(b"t")
    os.symlink("real/sub", tmp_path / "alias")
    # Lexically alias/../target is tmp/target; the kernel goes to real/target.
    links, final = Session().chain(f"{tmp_path}/alias/../target")
    assert (links, final) == ([f"{tmp_path}/alias"], f"{tmp_path}/real/target")


def test_loop_is_an_error(tmp_path: Path) -> None:
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    with pytest.raises(ClosureError):
        Session().chain(f"{tmp_path}/a")
