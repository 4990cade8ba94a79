"""What the virtual-cluster tests share: the skip marks, a state dir, users, polling.

Each cluster test module brings up its own cluster in a state dir made by
:func:`state_dir` and :func:`launcher.isolation.init_isolated`, so suites run
beside each other; what they do with it stays in the module.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from launcher.slurm.adapter import SlurmCli
from launcher.slurm.types import Job as SlurmJob

BIN = Path(sys.executable).parent
#: What every virtual cluster needs on PATH (iproute2, util-linux).
CLUSTER = ("ip", "nsenter")
#: ... and one with Slurm (slurm-wlm, munge).
SLURM = (*CLUSTER, "slurmctld", "slurmd", "munged")
#: Slurm job states a job has not ended in.
_RUNNING = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")


def needs_root_and(*programs: str, reason: str) -> list[pytest.MarkDecorator]:
    """``pytestmark`` of a cluster test: slow, and skipped (``reason``) unless run
    as root with every one of ``programs`` on PATH."""
    missing = os.geteuid() != 0 or not all(shutil.which(p) for p in programs)
    return [pytest.mark.slow, pytest.mark.skipif(missing, reason=reason)]


@dataclass(frozen=True)
class Poll:
    """``poll(what, check)``: ``check()``'s first truthy answer, asked every
    ``interval`` s; fails naming ``what`` after ``seconds`` (not asserted)."""

    seconds: float
    interval: float = 0.1

    def __call__(self, what: str, check: Callable[[], Any], seconds: float | None = None) -> Any:
        limit = self.seconds if seconds is None else seconds
        deadline = time.monotonic() + limit
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {limit:.0f} s")
            time.sleep(self.interval)


def state_dir(prefix: str) -> tuple[str, Path]:
    """A random tag and a new state dir ``/tmp/PREFIX-TAG-*`` (0755: node agents
    and users read below it)."""
    tag = secrets.token_hex(2)
    state = Path(tempfile.mkdtemp(prefix=f"{prefix}-{tag}-"))
    state.chmod(0o755)
    return tag, state


def add_user(name: str, *, home: bool = True) -> pwd.struct_passwd:
    """A new user ``name``: with a home and /bin/sh, or (``home=False``) with
    neither (nologin: jobs run as it, nobody logs in); its passwd entry."""
    if home:
        argv = ["useradd", "-m", "-s", "/bin/sh", name]
    else:
        argv = ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
    subprocess.run(argv, check=True, capture_output=True)
    return pwd.getpwnam(name)


def remove_user(name: str, *, home: bool = True) -> None:
    """Remove ``name`` (and with ``home`` its home); nothing when there is no such user."""
    subprocess.run(["userdel", *(["-r"] if home else []), name], capture_output=True, check=False)


def namespaces_left(prefix: str) -> list[str]:
    """The network namespaces named ``prefix...`` (none when ``prefix`` is empty)."""
    return [n for n in os.listdir("/run/netns") if prefix and n.startswith(prefix)]


def ended(cli: SlurmCli, job_id: int) -> SlurmJob | None:
    """The Slurm job once it has ended, else None."""
    job = cli.job(job_id)
    return job if job.state not in _RUNNING else None


def set_slurm(config: Path, **keys: int | str) -> None:
    """Set ``keys`` in the ``[slurm]`` table of ``config`` (written by init)."""
    data = tomllib.loads(config.read_text("utf-8"))
    data.setdefault("slurm", {}).update(keys)
    config.write_text(tomli_w.dumps(data), "utf-8")


def beosub_as(
    user: str, config: Path, cwd: Path, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``beosub ARGS`` run by ``user`` from ``cwd`` with cluster ``config``."""
    argv = ["runuser", "-u", user, "--", "env", f"BEOLAUNCH_CONFIG={config}"]
    return subprocess.run(
        [*argv, str(BIN / "beosub"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def admin_run(
    config: Path, script: str, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """An admin command (``beoctl``, ``beoacct``...) as root with ``--config``."""
    return subprocess.run(
        [str(BIN / script), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def slurm_up(config: Path, log_dir: Path, nodes: int) -> None:
    """``beoctl cluster up -n NODES --slurm``; fails with the Slurm daemons' logs."""
    up = admin_run(config, "beoctl", "cluster", "up", "-n", str(nodes), "--slurm")
    logs = "".join(f"\n--- {log}:\n" + log.read_text()[-2000:] for log in log_dir.glob("*.log"))
    assert up.returncode == 0, up.stderr + up.stdout + logs
