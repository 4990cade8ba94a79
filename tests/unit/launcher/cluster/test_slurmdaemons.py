"""Planning the virtual cluster's Slurm daemons and failing clearly when a node stays down."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from launcher.cluster import slurmdaemons
from launcher.cluster import spec as specs
from launcher.errors import SlurmDaemonError
from launcher.slurm.adapter import SlurmCli
from launcher.slurm.paths import SlurmPaths
from launcher.slurm.types import NodeInfo


def _spec(state: Path, n: int = 2) -> specs.ClusterSpec:
    layout = specs.Layout(netns_prefix="t-node")
    return specs.ClusterSpec(layout, [specs.node_spec(state, layout, i) for i in (1, n)])


def test_plan_runs_each_slurmd_in_its_node_namespaces(tmp_path: Path) -> None:
    paths = SlurmPaths.of_state(tmp_path)
    spec = _spec(tmp_path)
    plan = {d.name: d for d in slurmdaemons.plan(paths, spec)}
    assert list(plan) == ["munged", "slurmctld", "slurmd.node1", "slurmd.node2"]
    node = spec.nodes[1]
    slurmd = plan["slurmd.node2"]
    assert slurmd.argv[:4] == [
        "nsenter",
        f"--net={node.netns_path}",
        f"--uts={node.uts_file}",
        "--",
    ]
    assert slurmd.argv[4:] == slurmd.record
    assert slurmd.record[1:] == ["-D", "-N", "node2", "-f", str(paths.conf)]
    # Each argv names this state dir, so a leftover is told apart from another cluster's.
    assert all(str(tmp_path) in " ".join(d.record) for d in plan.values())
    assert all(d.pid_file.parent == paths.pid_dir for d in plan.values())


def test_recorded_daemons_stop_slurmds_first_and_munged_last(tmp_path: Path) -> None:
    paths = SlurmPaths.of_state(tmp_path)
    paths.pid_dir.mkdir(parents=True)
    for name in ("munged", "slurmctld", "slurmd.node2", "slurmd.node1"):
        paths.pid_file(name).write_text(f"999999\n{json.dumps(['/usr/sbin/' + name])}\n")
    assert [d.name for d in slurmdaemons._recorded(paths)] == [
        "slurmd.node1",
        "slurmd.node2",
        "slurmctld",
        "munged",
    ]
    report = slurmdaemons.down(tmp_path)  # pid 999999 is not ours: only the files go
    assert report.stopped == [] and len(report.stale_pid_files) == 4
    assert list(paths.pid_dir.iterdir()) == []


def test_a_node_that_stays_down_names_its_slurmd_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = SlurmPaths.of_state(tmp_path)
    answer = [
        NodeInfo("node1", "idle", (), None, "10.0.0.11", 2),
        NodeInfo("node2", "down", ("NOT_RESPONDING",), "Not responding", "10.0.0.12", 2),
    ]
    monkeypatch.setattr(SlurmCli, "nodes", lambda self: answer)
    with pytest.raises(SlurmDaemonError) as info:
        slurmdaemons.wait_ready(paths, [], ["node1", "node2"], wait=0.1)
    assert info.value.log == paths.log("slurmd.node2")
    assert "node2" in str(info.value) and "down" in str(info.value)


@pytest.mark.parametrize(
    ("state", "flags", "ok"),
    [
        ("idle", (), True),
        ("mixed", (), True),
        ("idle", ("NOT_RESPONDING",), False),  # sinfo's "idle*"
        ("idle", ("DRAIN",), False),
        ("down", (), False),
        ("unknown", (), False),
    ],
)
def test_ready_needs_a_responding_undrained_node(
    state: str, flags: tuple[str, ...], ok: bool
) -> None:
    assert slurmdaemons.ready(NodeInfo("n1", state, flags, None, None, 2)) is ok


def test_a_daemon_that_exits_is_named_with_its_log(tmp_path: Path) -> None:
    paths = SlurmPaths.of_state(tmp_path)
    gone = slurmdaemons.plan(paths, _spec(tmp_path))[1]  # slurmctld, never started
    with pytest.raises(SlurmDaemonError) as info:
        slurmdaemons.wait_ready(paths, [gone], ["node1"], wait=5)
    assert (info.value.daemon, info.value.log) == ("slurmctld", paths.log("slurmctld"))


def _config(tmp_path: Path) -> Path:
    from launcher.cli import beoctl

    assert beoctl.main(["init", "--state-dir", str(tmp_path / "state")]) == 0
    config = tmp_path / "state" / "config.toml"
    config.write_text(config.read_text() + "\n[slurm]\nprolog_timeout = 33\n")
    return config


def test_write_hooks_makes_executable_wrappers(tmp_path: Path) -> None:
    config = _config(tmp_path)
    hooks = slurmdaemons.write_hooks(tmp_path / "hooks", Path("/b/beoctl"), config)
    for path, stage in ((hooks.prolog, "prolog"), (hooks.epilog, "epilog")):
        assert path.stat().st_mode & 0o777 == 0o755
        assert path.read_text().splitlines()[-1].endswith(f"slurm {stage}")


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc)")
def test_write_hooks_builds_the_c_client_and_hands_it_the_configs_socket(tmp_path: Path) -> None:
    config = _config(tmp_path)
    hooks = slurmdaemons.write_hooks(tmp_path / "hooks", Path("/b/beoctl"), config)
    client = tmp_path / "hooks" / "hookclient"
    assert client.stat().st_mode & 0o111
    sock = str((tmp_path / "state").absolute() / "cluster" / "%n" / "agent.sock")
    assert f"exec {client} prolog {sock} 33; fi\n" in hooks.prolog.read_text()
    assert f"exec {client} epilog {sock} 33; fi\n" in hooks.epilog.read_text()


def test_next_job_id_goes_past_the_saved_count_and_every_finished_job(tmp_path: Path) -> None:
    paths = SlurmPaths(tmp_path)
    assert slurmdaemons.next_job_id(paths) == 1  # a fresh cluster
    paths.jobcomp.write_text(
        "JobId=7 UserId=root(0) JobState=COMPLETED\nJobId=12 UserId=root(0) JobState=FAILED\n"
    )
    assert slurmdaemons.next_job_id(paths) == 13
    paths.next_job_id.write_text("20\n")  # what a running slurmctld said it gives next
    assert slurmdaemons.next_job_id(paths) == 20
    paths.next_job_id.write_text("garbage\n")
    assert slurmdaemons.next_job_id(paths) == 13


def test_the_first_job_id_line_does_not_count_as_a_config_change() -> None:
    text = "ClusterName=x\nFirstJobId=41\nSlurmctldPort=1\n"
    assert slurmdaemons._without_first_job_id(text) == "ClusterName=x\nSlurmctldPort=1\n"


def test_a_daemon_still_in_its_launcher_counts_as_running(tmp_path: Path) -> None:
    # Just after the start, a slurmd is still nsenter (or between two execs), not
    # yet the slurmd the pid file records: that is "starting", not "exited".
    from launcher.cluster import processes

    pid_file, log = tmp_path / "d.pid", tmp_path / "d.log"
    launcher, slurmd = ["sleep", "30"], ["slurmd", "-D", "-N", "node1"]
    pid = processes.start(launcher, pid_file, log, record=slurmd)
    daemon = slurmdaemons.Daemon("slurmd.node1", launcher, slurmd, pid_file, log)
    try:
        assert processes.running(pid_file, slurmd) is None  # its argv is not slurmd's yet
        slurmdaemons._check_alive(daemon)  # yet it runs: no error
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    with pytest.raises(SlurmDaemonError) as info:
        slurmdaemons._check_alive(daemon)  # now it is gone
    assert info.value.log == log
