"""Where the virtual cluster's Slurm keeps its files: all under ``STATE/slurm``.

Nothing goes to /etc/slurm, /run/munge or /var/spool: clients find the config
through ``SLURM_CONF`` (see :meth:`SlurmPaths.env`), and two state dirs never
share a file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SlurmPaths:
    """The files of one state dir's Slurm."""

    root: Path  # STATE/slurm

    @classmethod
    def of_state(cls, state_dir: Path) -> SlurmPaths:
        return cls(state_dir.absolute() / "slurm")

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def hooks_dir(self) -> Path:
        """The prolog and epilog wrapper scripts."""
        return self.root / "hooks"

    @property
    def state_save(self) -> Path:
        return self.root / "ctld"

    @property
    def spool(self) -> Path:
        """Parent of each slurmd's spool (``spool/NODE``)."""
        return self.root / "spool"

    @property
    def tmp_fs(self) -> Path:
        """Parent of each slurmd's ``TmpFS`` (``tmp/NODE``): the nodes share this
        host's /tmp, where two slurmstepds of one MPI step would both create
        mpi/pmix's ``spmix_appdir_UID_JOB.STEP`` and the second fail (EEXIST)."""
        return self.root / "tmp"

    def node_tmp(self, node: str) -> Path:
        return self.tmp_fs / node

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def run_dir(self) -> Path:
        """Slurm's and munged's own pid files (pid only)."""
        return self.root / "run"

    @property
    def pid_dir(self) -> Path:
        """Our pid files (pid + argv), one per daemon we started."""
        return self.root / "pids"

    @property
    def next_job_id(self) -> Path:
        """The job id to restart slurmctld's count at (it starts with -c)."""
        return self.root / "next_job_id"

    @property
    def jobcomp(self) -> Path:
        """jobcomp/filetxt: one ``Key=Value`` line per finished job (no slurmdbd here)."""
        return self.root / "jobcomp.txt"

    @property
    def munge_dir(self) -> Path:
        """munged's socket (0755, so users' sbatch reach it)."""
        return self.root / "munge"

    @property
    def munge_socket(self) -> Path:
        return self.munge_dir / "munge.socket"

    @property
    def munge_key(self) -> Path:
        """The cluster's own munge key (0600, root), in a 0700 dir."""
        return self.root / "key" / "munge.key"

    def log(self, daemon: str) -> Path:
        """``munged``, ``slurmctld`` or ``slurmd.NODE``."""
        return self.log_dir / f"{daemon}.log"

    def pid_file(self, daemon: str) -> Path:
        """Our record (pid and argv) of ``daemon``."""
        return self.pid_dir / f"{daemon}.pid"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with SLURM_CONF set to ours."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        return env
