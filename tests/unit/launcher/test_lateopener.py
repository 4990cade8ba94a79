"""The master's as-the-user lookup helper, run for real as nobody."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.master.late import UserLookup

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs the helper as nobody")


@pytest.fixture
def nobody() -> Iterator[UserLookup]:
    account = pwd.getpwnam("nobody")
    helper = UserLookup(account.pw_uid, account.pw_gid, ())
    try:
        yield helper
    finally:
        helper.close()


@pytest.fixture
def tree() -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="beolaunch-lateopener-", dir="/srv"))
    top.chmod(0o755)
    (top / "public").write_text("hello\n")
    (top / "public").chmod(0o644)
    (top / "secret").write_text("root only\n")
    (top / "secret").chmod(0o600)
    (top / "link").symlink_to(top / "secret")
    (top / "dir").mkdir()
    (top / "dir" / "a").write_text("")
    (top / "closed").mkdir(mode=0o700)
    (top / "closed" / "inside").write_text("x")
    os.mkfifo(top / "fifo")
    try:
        yield top
    finally:
        shutil.rmtree(top)


def test_a_readable_file_comes_back_as_an_open_descriptor(nobody: UserLookup, tree: Path) -> None:
    looked, none = nobody.ask("lookup", str(tree / "public"))
    assert none is None and looked["kind"] == "file" and looked["size"] == 6  # no bytes yet
    answer, fd = nobody.ask("open", str(tree / "public"))
    assert fd is not None
    try:
        assert answer["kind"] == "file" and answer["size"] == 6
        assert os.read(fd, 100) == b"hello\n"
    finally:
        os.close(fd)


def test_what_the_user_cannot_read_is_denied_not_opened(nobody: UserLookup, tree: Path) -> None:
    # that it exists, where the user may list: yes; its bytes: no
    assert nobody.ask("lookup", str(tree / "secret"))[0]["kind"] == "file"
    assert nobody.ask("open", str(tree / "secret")) == ({"kind": "denied", "errno": "EACCES"}, None)
    assert nobody.ask("lookup", str(tree / "closed" / "inside"))[0]["kind"] == "denied"
    assert nobody.ask("open", "/etc/shadow")[0]["kind"] == "denied"


def test_a_symlink_is_answered_as_a_link_never_followed(nobody: UserLookup, tree: Path) -> None:
    answer, fd = nobody.ask("lookup", str(tree / "link"))
    assert fd is None
    assert answer["kind"] == "symlink" and answer["target"] == str(tree / "secret")
    # a link on the way is not walked through
    (tree / "via").symlink_to(tree / "dir")
    assert nobody.ask("lookup", str(tree / "via" / "a"))[0]["kind"] == "absent"


def test_directories_list_their_names_and_odd_files_do_not_exist(
    nobody: UserLookup, tree: Path
) -> None:
    answer, _ = nobody.ask("list", str(tree))
    assert answer["kind"] == "dir"
    assert answer["names"] == sorted(["public", "secret", "link", "dir", "closed", "fifo"])
    assert nobody.ask("lookup", str(tree / "fifo"))[0]["kind"] == "absent"
    assert nobody.ask("lookup", str(tree / "missing"))[0]["kind"] == "absent"
    assert nobody.ask("list", str(tree / "public"))[0]["kind"] == "absent"
    assert nobody.ask("lookup", "relative/path")[0]["kind"] == "absent"
    assert nobody.ask("lookup", str(tree) + "/../etc")[0]["kind"] == "absent"


def test_only_what_root_alone_may_change_is_stable(nobody: UserLookup, tree: Path) -> None:
    # tree is root's 0755: its names and absences may serve the user's next jobs
    assert nobody.ask("list", str(tree))[0]["stable"] is True
    assert nobody.ask("lookup", str(tree / "missing"))[0]["stable"] is True
    (tree / "dir").chmod(0o777)  # anyone may add a file there: never reused
    assert nobody.ask("lookup", str(tree / "dir"))[0]["stable"] is False
    assert nobody.ask("lookup", str(tree / "dir" / "later"))[0]["stable"] is False
    os.chown(tree / "closed", 65534, 65534)  # the user's own directory
    assert nobody.ask("list", str(tree / "closed"))[0]["stable"] is False
