"""Stopping the virtual cluster's Slurm daemons by pid file, with real processes.

No Slurm is started here: ``sleep`` processes stand in for daemons to show
that a pid file is honoured only when its process runs the recorded argv.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psutil

from launcher.cluster import processes, slurmdaemons
from launcher.slurm.paths import SlurmPaths


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def test_down_stops_a_recorded_daemon_and_spares_a_pid_running_something_else(
    tmp_path: Path,
) -> None:
    paths = SlurmPaths.of_state(tmp_path)
    ours = ["sleep", "61"]
    processes.start(ours, paths.pid_file("slurmctld"), paths.log("slurmctld"), record=ours)
    ours_pid = processes.read_pid_file(paths.pid_file("slurmctld"))
    assert ours_pid is not None
    # A pid file naming a live process that runs another command (a recycled pid).
    other = subprocess.Popen(["sleep", "62"])
    try:
        paths.pid_file("slurmd.node1").write_text(
            f"{other.pid}\n{json.dumps(['/usr/sbin/slurmd', '-D', '-N', 'node1'])}\n"
        )
        report = slurmdaemons.down(tmp_path)
        assert report.stopped + report.killed == [ours_pid.pid]
        assert report.stale_pid_files == [paths.pid_file("slurmd.node1")]
        assert _alive(other)
        gone = not psutil.pid_exists(ours_pid.pid)
        assert gone or psutil.Process(ours_pid.pid).status() == psutil.STATUS_ZOMBIE
        assert list(paths.pid_dir.iterdir()) == []
    finally:
        other.kill()
        other.wait()
