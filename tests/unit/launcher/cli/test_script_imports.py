"""What the everyday console scripts import: they start on every call, so each
module they pull in is paid each time (``beostat`` took the whole ``beoctl``
group with it, 0.4 s a run, until its node table moved to ``cli/nodetable.py``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Modules the admin's command and the master daemon bring: not for a status query;
#: nor matplotlib (0.3 to 1 s), which only ``beoacct report`` imports.
HEAVY = ("launcher.cli.beoctl", "launcher.master.daemon", "launcher.cluster", "matplotlib")


@pytest.mark.parametrize("script", ["beostat", "beoacct"])
def test_status_scripts_do_not_import_the_admin_command(script: str) -> None:
    probe = (
        f"import sys, launcher.cli.{script}\n"
        "print(*(m for m in sys.modules if m.startswith(tuple(sys.argv[1:]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *HEAVY], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == [], f"{script} imports {done.stdout.split()}"
