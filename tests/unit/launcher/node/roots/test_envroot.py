"""EnvRoot's pure parts: job names and the files a bind would hide."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cachefs.manifest import Entry, build
from launcher.errors import EnvRootError
from launcher.node.roots.envroot import EnvRoot
from launcher.node.roots.tmpseed import seed_tmp

SHA = "a" * 64


@pytest.mark.parametrize("job", ["", ".", "..", "a/b", "x\0"])
def test_a_job_name_must_be_one_path_component(job: str, tmp_path: Path) -> None:
    manifest = build("/bin/x", [Entry("/bin/x", "file", 0o755, 1, SHA)])
    with pytest.raises(EnvRootError) as info:
        EnvRoot.create(manifest, None, tmp_path, job)  # type: ignore[arg-type]
    assert info.value.job == job
    assert list(tmp_path.iterdir()) == []


def test_overlays_are_the_files_below_a_directory() -> None:
    manifest = build(
        "/home/u/bin/prog",
        [
            Entry("/home/u/bin/prog", "file", 0o755, 1, SHA),
            Entry("/home/u/lib", "symlink", 0o777, target="/opt/lib"),
            Entry("/home/uv/other", "file", 0o644, 1, SHA),
            Entry("/tmp/x/run.sh", "file", 0o755, 1, SHA),
        ],
    )
    root = EnvRoot(Path("/r"), "j", "farm", manifest, ())
    assert root.overlays("/home/u") == ["/home/u/bin/prog"]
    assert root.overlays("/home/u/") == ["/home/u/bin/prog"]
    assert root.overlays("/tmp") == ["/tmp/x/run.sh"]


def test_seed_tmp_recreates_links_dirs_and_the_working_directory(tmp_path: Path) -> None:
    manifest = build(
        "/tmp/w/bin/prog",
        [
            Entry("/tmp/w/bin/prog", "file", 0o755, 1, "a" * 64),
            Entry("/tmp/w/lib", "dir", 0o755),
            Entry("/tmp/w/lib/libx.so.1", "symlink", 0o777, target="libx.so.1.0"),
            Entry("/usr/lib/liby.so.1", "symlink", 0o777, target="liby.so.1.0"),
        ],
    )
    made = seed_tmp(manifest, tmp_path, [("/tmp/w/run", 4321, 4322), ("/home/u", 1, 1)])
    assert made == 3
    assert os.readlink(tmp_path / "w/lib/libx.so.1") == "libx.so.1.0"
    assert not (tmp_path / "w/bin/prog").exists()  # files are bound in by the sandbox
    st = (tmp_path / "w/run").stat()
    assert (st.st_uid, st.st_gid) == (4321, 4322)
    assert not (tmp_path / "usr").exists() and not (tmp_path / "home").exists()


def test_seed_tmp_never_follows_a_symlink_planted_in_tmp(tmp_path: Path) -> None:
    # The job's tmp is 1777: a task may plant a link before a later seeding,
    # and a forged manifest may try to put one there first. Root must not follow.
    tmp, outside = tmp_path / "job.tmp", tmp_path / "victim"
    tmp.mkdir()
    outside.mkdir()
    (tmp / "a").symlink_to(outside)
    manifest = build(
        "/bin/sh",
        [Entry("/bin/sh", "file", 0o755, 1, SHA), Entry("/tmp/a/x", "dir", 0o755)],
    )
    with pytest.raises(OSError):
        seed_tmp(manifest, tmp)
    links = build(
        "/bin/sh",
        [
            Entry("/bin/sh", "file", 0o755, 1, SHA),
            Entry("/tmp/a/evil", "symlink", 0o777, target="/etc/shadow"),
        ],
    )
    with pytest.raises(OSError):
        seed_tmp(links, tmp)
    with pytest.raises(OSError):
        seed_tmp(build("/bin/sh", []), tmp, [("/tmp/a/work", 4321, 4321)])
    assert list(outside.iterdir()) == []


def test_seed_tmp_ignores_working_directories_that_are_not_normalised(tmp_path: Path) -> None:
    made = seed_tmp(build("/bin/sh", []), tmp_path, [("/tmp/x/../../etc", 0, 0), ("/tmp//y", 0, 0)])
    assert made == 0
    assert list(tmp_path.iterdir()) == []
