"""LateTree: what the manifest lacks is asked once, remembered, and checked.

The channel here is a scripted stand-in (a unit test of the tree's logic); the
FUSE server and the agent's side run for real in tests/integration/test_late_files.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cachefs.errors import (
    ViewLateError,
    ViewNotADirectory,
    ViewNotFound,
    ViewPermissionError,
)
from cachefs.manifest import Entry, build
from cachefs.view.late import LateChannel, LateTree
from cachefs.view.tree import DirNode, FileNode, SymlinkNode, Tree

SHA_A = "a" * 64
SHA_B = "b" * 64


class Scripted(LateChannel):
    """Answers from a dict path -> answer; records what was asked."""

    def __init__(self, answers: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.answers = answers
        self.log: list[tuple[str, str]] = []

    def ask(self, op: str, path: str) -> dict[str, Any]:
        self.log.append((op, path))
        return self.answers.get((op, path), {"kind": "absent"})


def _tree() -> Tree:
    entries = [
        Entry("/bin/sh", "file", 0o755, 10, SHA_A),
        Entry("/usr/bin/prog", "file", 0o755, 10, SHA_A),
    ]
    return Tree.from_manifest(
        build("/bin/sh", entries),
        lambda sha: Path("/cache") / sha,
        mountpoints=("/proc", "/tmp"),
    )


def _file(size: int = 5, sha: str = SHA_B) -> dict[str, Any]:
    return {
        "kind": "file",
        "mode": 0o755,
        "mtime": 1,
        "size": size,
        "sha256": sha,
        "backing": f"/cache/{sha}",
        "uid": 0,
    }


def test_a_path_the_tree_holds_is_never_asked() -> None:
    channel = Scripted({})
    late = LateTree(_tree(), channel)
    assert isinstance(late.lookup("/bin/sh"), FileNode)
    assert channel.log == []
    assert late.children("/bin") == ("sh",)  # the master has no other name there
    assert channel.log == [("list", "/bin")]


def test_a_miss_is_asked_once_and_becomes_a_node() -> None:
    channel = Scripted({("lookup", "/usr/bin/date"): _file()})
    late = LateTree(_tree(), channel)
    node = late.lookup("/usr/bin/date")
    assert isinstance(node, FileNode) and node.sha256 == SHA_B and node.size == 5
    assert node.backing == Path(f"/cache/{SHA_B}")
    assert late.lookup("/usr/bin/date") is node
    assert channel.log == [("lookup", "/usr/bin/date")]
    assert node.ino > len(_tree())  # never one of the tree's inodes


def test_absent_and_denied_are_remembered() -> None:
    channel = Scripted(
        {
            ("lookup", "/etc"): {"kind": "dir", "mode": 0o755, "mtime": 0, "names": ["shadow"]},
            ("lookup", "/etc/shadow"): {"kind": "denied", "errno": "EACCES"},
        }
    )
    late = LateTree(_tree(), channel)
    for _ in range(3):
        with pytest.raises(ViewNotFound):
            late.lookup("/usr/bin/nothing")
        with pytest.raises(ViewPermissionError):
            late.lookup("/etc/shadow")
    assert channel.log.count(("lookup", "/usr/bin/nothing")) == 1
    assert channel.log.count(("lookup", "/etc/shadow")) == 1


def test_a_late_directory_answers_its_missing_names_without_asking() -> None:
    answers = {
        ("lookup", "/usr/share"): {"kind": "dir", "mode": 0o755, "mtime": 0, "names": ["zoneinfo"]},
        ("lookup", "/usr/share/zoneinfo"): {
            "kind": "symlink",
            "mode": 0o777,
            "mtime": 0,
            "target": "/elsewhere",
        },
    }
    channel = Scripted(answers)
    late = LateTree(_tree(), channel)
    assert isinstance(late.lookup("/usr/share"), DirNode)
    assert late.children("/usr/share") == ("zoneinfo",)
    assert isinstance(late.lookup("/usr/share/zoneinfo"), SymlinkNode)
    assert late.readlink("/usr/share/zoneinfo") == "/elsewhere"
    with pytest.raises(ViewNotFound):
        late.lookup("/usr/share/locale")
    assert ("lookup", "/usr/share/locale") not in channel.log


def test_a_manifest_directory_is_listed_in_full_once() -> None:
    channel = Scripted({("list", "/usr/bin"): {"kind": "dir", "names": ["date", "prog", "tr"]}})
    late = LateTree(_tree(), channel)
    assert late.children("/usr/bin") == ("date", "prog", "tr")
    assert late.children("/usr/bin") == ("date", "prog", "tr")
    assert channel.log == [("list", "/usr/bin")]
    with pytest.raises(ViewNotFound):  # not among the names: no round trip
        late.lookup("/usr/bin/zzz")
    assert channel.log == [("list", "/usr/bin")]


def test_mount_points_and_closed_paths_are_never_asked() -> None:
    channel = Scripted({})
    late = LateTree(_tree(), channel, closed=("/sys",))
    with pytest.raises(ViewNotFound):
        late.lookup("/tmp/x")
    assert late.children("/tmp") == ()
    with pytest.raises(ViewNotFound):
        late.lookup("/sys")
    assert channel.log == []


def test_walking_through_a_file_is_not_a_directory() -> None:
    late = LateTree(_tree(), Scripted({}))
    with pytest.raises(ViewNotADirectory):
        late.lookup("/bin/sh/x")


@pytest.mark.parametrize(
    "answer",
    [
        {"kind": "file", "mode": 0o755, "mtime": 1, "size": 5, "sha256": "x", "backing": "/c"},
        {"kind": "file", "mode": 0o755, "mtime": 1, "size": -1, "sha256": SHA_B, "backing": "/c"},
        {"kind": "file", "mode": 0o755, "mtime": 1, "size": 5, "sha256": SHA_B, "backing": "rel"},
        {"kind": "dir", "mode": 0o755, "mtime": 0, "names": ["../etc"]},
        {"kind": "dir", "mode": 0o70000, "mtime": 0, "names": []},
        {"kind": "symlink", "mode": 0o777, "mtime": 0, "target": ""},
        {"kind": "error", "message": "the master is away"},
        {"kind": "surprise"},
    ],
)
def test_a_bad_answer_is_an_io_error_not_a_node(answer: dict[str, Any]) -> None:
    late = LateTree(_tree(), Scripted({("lookup", "/usr/bin/x"): answer}))
    with pytest.raises(ViewLateError):
        late.lookup("/usr/bin/x")
    with pytest.raises(ViewLateError):  # an error is not remembered as absent
        late.lookup("/usr/bin/x")
