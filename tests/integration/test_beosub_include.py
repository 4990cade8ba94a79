"""``beosub --include`` of a directory the user cannot list: one line naming the path
and what to do, exit 1 (it was a PermissionError traceback)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from launcher.initialize import initialize

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs beosub as nobody")


def test_an_unreadable_include_directory_is_one_line_naming_it(top: Path) -> None:
    initialize(top / "state")
    (top / "state").chmod(0o755)
    locked = top / "locked"
    locked.mkdir(mode=0o700)
    (locked / "data").write_bytes(b"root's")
    proc = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            str(ROOT / ".venv" / "bin" / "beosub"),
            "--dry-run",
            "--include",
            str(locked),
            "--",
            "/bin/true",
        ],
        cwd=top,
        env={
            **os.environ,
            "HOME": str(top),
            "BEOLAUNCH_CONFIG": str(top / "state" / "config.toml"),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        f"beosub: include {locked}: cannot list this directory (Permission denied);"
        " make it readable to you or leave it out of --include"
    ]
