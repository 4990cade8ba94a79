"""Which host directories a job's root gets bound in, and what its submitter is told."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cachefs.manifest import Entry, Manifest, build
from launcher.node.roots.sitebinds import (
    BindPlan,
    blocker,
    host_problem,
    mount_order,
    plan_binds,
    printable,
)
from launcher.wire import MAX_NOTICE

SHA = "0" * 64


def _manifest(*extra: Entry) -> Manifest:
    prog = Entry("/usr/bin/prog", "file", 0o755, size=1, sha256=SHA)
    return build("/usr/bin/prog", [prog, *extra], 1000)


def _present(*paths: str) -> Callable[[str], str | None]:
    def problem(path: str) -> str | None:
        return None if path in paths else "is not on this node"

    return problem


def test_present_binds_are_kept_missing_ones_said_once() -> None:
    plan = plan_binds(
        _manifest(), ["/scratch", "/home", "/data"], None, problem=_present("/home", "/data")
    )
    assert plan.binds == ("/home", "/data")  # shallowest first, else as configured
    assert plan.notices == ("/scratch is not on this node; the job runs without it",)
    assert plan.home is None and plan.mountpoints == ("/home", "/data")


def test_a_home_under_a_bind_needs_no_bind_of_its_own() -> None:
    present = _present("/home", "/home/alice")
    plan = plan_binds(_manifest(), ["/home"], "/home/alice", problem=present)
    assert plan == BindPlan(("/home",), None, ())
    # Under a configured bind missing here: that bind's notice says it all.
    plan = plan_binds(_manifest(), ["/home"], "/home/alice", problem=_present())
    assert plan.notices == ("/home is not on this node; the job runs without it",)
    assert plan.home is None


def test_a_home_of_its_own_and_a_missing_home() -> None:
    plan = plan_binds(_manifest(), [], "/u/alice/", problem=_present("/u/alice"))
    assert plan.home == "/u/alice" and plan.mountpoints == ("/u/alice",) and not plan.notices
    plan = plan_binds(_manifest(), ["/scratch"], "/u/bob", problem=_present("/scratch"))
    assert plan.home is None
    assert plan.notices == ("home /u/bob is not on this node; the job runs without it",)
    for nothing in (None, "/"):
        assert plan_binds(_manifest(), [], nothing, problem=_present()) == BindPlan()


def test_nothing_is_mounted_inside_another_bind() -> None:
    present = _present("/scratch", "/scratch/fast", "/u/alice", "/u/alice/data")
    binds = ["/scratch/fast", "/scratch", "/u/alice/data"]
    plan = plan_binds(_manifest(), binds, "/u/alice", problem=present)
    # Each bind is recursive: the outer one shows the inner, so no mount point
    # is ever reached through a directory a user may write.
    assert plan.binds == ("/scratch",) and plan.home == "/u/alice"
    assert plan.mountpoints == ("/scratch", "/u/alice") and not plan.notices


def test_paths_the_jobs_files_make_a_symlink_or_file_are_left_out() -> None:
    manifest = _manifest(
        Entry("/scratch", "symlink", 0o777, target="/data/scratch"),
        Entry("/data/scratch", "dir", 0o755),
        Entry("/srv/x", "file", 0o644, size=1, sha256=SHA),
    )
    assert blocker(manifest, "/scratch/u") == "the job's files have a symlink at /scratch"
    assert blocker(manifest, "/data/scratch") is None
    present = _present("/scratch", "/srv/x/y", "/data")
    plan = plan_binds(manifest, ["/scratch", "/srv/x/y", "/data"], None, problem=present)
    assert plan.binds == ("/data",)
    assert plan.notices == (
        "/scratch is not bound in: the job's files have a symlink at /scratch",
        "/srv/x/y is not bound in: the job's files have a file at /srv/x",
    )


def test_a_home_where_each_task_has_its_own_dir_is_not_bound() -> None:
    plan = plan_binds(_manifest(), [], "/tmp/alice", problem=_present("/tmp/alice"))
    assert plan.home is None
    assert plan.notices == ("home /tmp/alice is not bound in: the job has its own /tmp",)


def test_mount_order_is_shallowest_first_without_repeats() -> None:
    assert mount_order(["/a/b/c", "/z", "/a/b", "/z", "/b"]) == ("/z", "/b", "/a/b", "/a/b/c")


@pytest.mark.skipif(os.geteuid() != 0, reason="a symlink owned by a user is made with lchown")
def test_host_problem_follows_roots_symlinks_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "admins").symlink_to(data)
    (tmp_path / "users").symlink_to(data)
    os.lchown(tmp_path / "users", 4321, 4321)
    assert host_problem(str(data)) is None
    assert host_problem(str(tmp_path / "admins")) is None
    assert host_problem(str(tmp_path / "gone")) == "is not on this node"
    assert host_problem(str(tmp_path / "file")) == "is not a directory on this node"
    said = host_problem(str(tmp_path / "users" / "sub"))
    assert said is not None and "symbolic link not owned by root" in said and "users" in said


def test_notices_are_one_printable_line() -> None:
    plan = plan_binds(_manifest(), ["/scr\natch\x1b[2J"], None, problem=_present())
    (said,) = plan.notices
    assert said.isprintable() and "/scr\\natch\\x1b[2J is not on this node" in said
    assert printable("é" * 2000).endswith("...") and len(printable("é" * 2000)) == MAX_NOTICE
