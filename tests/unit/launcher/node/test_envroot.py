"""EnvRoot's pure parts: job names and the files a bind would hide."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachefs.manifest import Entry, build
from launcher.errors import EnvRootError
from launcher.node.envroot import EnvRoot

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
