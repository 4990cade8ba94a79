"""The documents nested in prepare and exec: checked field by field, named when bad."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from cachefs.errors import CorruptObjectError, ObjectUnavailableError
from cachefs.manifest import Entry, build
from launcher import wire
from launcher.errors import TaskProgramNotFoundError, TaskSetupError
from launcher.node.requests import envroot_of, refusal, sources_of, start_status, task_of

TASK: dict[str, Any] = {
    "task": 2,
    "argv": ["/bin/sh", "-c", "exit 3"],
    "env": {"PATH": "/bin"},
    "cwd": "/home/ann",
    "uid": 1000,
    "gid": 1000,
    "groups": [1000, 27],
    "home": "/home/ann",
}


def test_a_task_document_becomes_a_task_spec() -> None:
    number, spec = task_of(TASK)
    assert number == 2
    assert (spec.argv, spec.env, spec.cwd, spec.uid, spec.gid, spec.groups, spec.home) == (
        ["/bin/sh", "-c", "exit 3"],
        {"PATH": "/bin"},
        "/home/ann",
        1000,
        1000,
        [1000, 27],
        "/home/ann",
    )
    assert spec.allow_root is False
    _, minimal = task_of({"task": 0, "argv": ["/bin/true"], "uid": 5, "gid": 5})
    assert (minimal.env, minimal.cwd, minimal.groups, minimal.home) == ({}, "/", [], None)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"task": "2"}, "'task'"),
        ({"task": True}, "'task'"),
        ({"task": -1}, "negative"),
        ({"argv": "/bin/sh"}, "'argv'"),
        ({"argv": ["/bin/sh", 3]}, "'argv'"),
        ({"env": {"A": 1}}, "'env'"),
        ({"uid": "1000"}, "'uid'"),
        ({"uid": None}, "'uid'"),
        ({"groups": [True]}, "'groups'"),
        ({"allow_root": "yes"}, "'allow_root'"),
    ],
)
def test_a_malformed_task_is_named(change: dict[str, Any], named: str) -> None:
    with pytest.raises(wire.WireError, match=named):
        task_of({**TASK, **change})


def test_a_task_without_argv_is_named() -> None:
    doc = {k: v for k, v in TASK.items() if k != "argv"}
    with pytest.raises(wire.WireError, match="no 'argv'"):
        task_of(doc)


def test_sources_are_checked_and_kept_in_order() -> None:
    prepare = wire.Prepare(
        1,
        {},
        [
            {"url": "http://10.77.0.1:8801", "kind": "master"},
            {"url": "http://10.77.0.12:8802", "kind": "peer"},
        ],
        "secret",
    )
    sources = sources_of(prepare)
    assert [(s.label, s.kind) for s in sources] == [
        ("http://10.77.0.1:8801", "master"),
        ("http://10.77.0.12:8802", "peer"),
    ]
    for bad in ({"url": "ftp://x"}, {"url": "http://x", "kind": "mirror"}, "http://x"):
        with pytest.raises(wire.WireError, match="source 0"):
            sources_of(wire.Prepare(1, {}, [bad], "secret"))  # type: ignore[list-item]


def test_a_refusal_names_the_files_of_the_objects_that_failed() -> None:
    sha_a, sha_b = "a" * 64, "b" * 64
    manifest = build(
        "/bin/prog",
        [
            Entry("/", "dir", 0o755),
            Entry("/bin", "dir", 0o755),
            Entry("/bin/prog", "file", 0o755, sha256=sha_a, size=3),
            Entry("/bin/prog2", "file", 0o755, sha256=sha_a, size=3),
            Entry("/bin/lib.so", "file", 0o644, sha256=sha_b, size=4),
        ],
    )
    corrupt = refusal(CorruptObjectError(sha_a, "http://m", 3), manifest)
    assert sha_a in corrupt and "/bin/prog, /bin/prog2" in corrupt and "lib.so" not in corrupt
    missing = refusal(ObjectUnavailableError([sha_b], ["http://m"]), manifest)
    assert "/bin/lib.so" in missing
    assert refusal(ValueError("other"), None) == "other"


def test_start_status_is_what_a_shell_reports() -> None:
    assert start_status(TaskProgramNotFoundError("find program", "/x: not found")) == 127
    assert start_status(TaskSetupError("execve", "no such file", errno.ENOENT)) == 127
    assert start_status(TaskSetupError("execve", "permission denied", errno.EACCES)) == 126
    assert start_status(OSError(errno.EPERM, "spawn")) == 126


def test_the_envroot_of_a_prepare_is_parsed_and_a_bad_one_named() -> None:
    base = wire.Prepare(1, {}, [], "t", None)
    assert envroot_of(base).node_files == ("/etc/hostname", "/etc/resolv.conf")  # older master
    sent = wire.Prepare(1, {}, [], "t", {"node_files": ["/etc/motd"], "late": "fail"})
    assert envroot_of(sent).node_files == ("/etc/motd",)
    bad = wire.Prepare(1, {}, [], "t", {"node_files": ["etc/../shadow"]})
    with pytest.raises(wire.WireError, match=r"envroot\.node_files"):
        envroot_of(bad)
