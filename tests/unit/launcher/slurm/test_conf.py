"""slurm.conf generation: the virtual cluster's file, the admin fragment, hook scripts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from launcher.slurm import conf
from launcher.slurm.paths import SlurmPaths
from launcher.slurm.settings import SlurmSettings

NODES = [
    conf.SlurmNode("node1", "10.77.0.11", 2, 1000),
    conf.SlurmNode("node2", "10.77.0.12", 4, 2048),
]
CONTROLLER = conf.Controller("vm", "10.77.0.1")


def _settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def _conf(tmp_path: Path, hooks: conf.Hooks | None = None) -> dict[str, list[str]]:
    settings = SlurmSettings(cluster_name="t1", slurmctld_port=20001, slurmd_port=20002)
    paths = SlurmPaths.of_state(tmp_path)
    return _settings(conf.cluster_conf(settings, CONTROLLER, NODES, paths, hooks))


def test_cluster_conf_names_controller_ports_and_every_node(tmp_path: Path) -> None:
    got = _conf(tmp_path)
    assert got["SlurmctldHost"] == ["vm(10.77.0.1)"]
    assert (got["SlurmctldPort"], got["SlurmdPort"]) == (["20001"], ["20002"])
    assert got["ClusterName"] == ["t1"]
    assert got["NodeName"] == [
        "node1 NodeAddr=10.77.0.11 NodeHostname=node1 CPUs=2 RealMemory=1000 State=UNKNOWN",
        "node2 NodeAddr=10.77.0.12 NodeHostname=node2 CPUs=4 RealMemory=2048 State=UNKNOWN",
    ]
    assert got["PartitionName"] == [
        "beolaunch Nodes=node1,node2 Default=YES MaxTime=INFINITE State=UP"
    ]


def test_every_path_slurm_writes_is_under_the_state_dir(tmp_path: Path) -> None:
    got = _conf(tmp_path)
    root = str(tmp_path / "slurm")
    for key in (
        "StateSaveLocation",
        "SlurmdSpoolDir",
        "TmpFS",
        "SlurmctldPidFile",
        "SlurmdPidFile",
        "SlurmctldLogFile",
        "SlurmdLogFile",
        "JobCompLoc",
    ):
        assert got[key][0].startswith(root + "/"), key
    # One TmpFS per node (%n): mpi/pmix makes each step's client dir in it.
    assert got["TmpFS"] == [f"{root}/tmp/%n"]
    assert got["AuthInfo"] == [f"socket={root}/munge/munge.socket"]
    assert got["JobCompType"] == ["jobcomp/filetxt"]


def test_cluster_conf_without_hooks_has_no_prolog_but_keeps_the_rest(tmp_path: Path) -> None:
    got = _conf(tmp_path)
    assert "Prolog" not in got and "Epilog" not in got
    assert got["PrologFlags"] == ["Alloc"]
    assert got["SchedulerParameters"] == ["batch_sched_delay=0"]


def test_cluster_conf_and_admin_fragment_share_the_hook_settings(tmp_path: Path) -> None:
    hooks = conf.Hooks.in_dir(Path("/opt/beo/hooks"))
    settings = SlurmSettings(prolog_timeout=45)
    fragment = _settings(conf.admin_fragment(settings, hooks))
    assert fragment == {
        "Prolog": ["/opt/beo/hooks/prolog"],
        "Epilog": ["/opt/beo/hooks/epilog"],
        "PrologFlags": ["Alloc"],
        "PrologEpilogTimeout": ["45"],
        "SchedulerParameters": ["batch_sched_delay=0"],
    }
    whole = _settings(
        conf.cluster_conf(settings, CONTROLLER, NODES, SlurmPaths.of_state(tmp_path), hooks)
    )
    assert {k: whole[k] for k in fragment} == fragment


def test_no_nodes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one node"):
        conf.cluster_conf(SlurmSettings(), CONTROLLER, [], SlurmPaths.of_state(tmp_path), None)


def test_hook_script_sets_path_and_runs_the_fast_beoctl(tmp_path: Path) -> None:
    script = conf.hook_script("prolog", Path("/opt/beo dir/bin/beoctl"), Path("/etc/beo.toml"))
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert f"PATH={conf.HOOK_PATH}" in lines and "export PATH" in lines
    assert lines[-1] == (
        "exec '/opt/beo dir/bin/python' -m launcher.slurm.hook --config /etc/beo.toml slurm prolog"
    )


def test_hook_script_runs_with_no_path_in_the_environment(tmp_path: Path) -> None:
    # slurmd gives the prolog no PATH; the wrapper must still find what it runs.
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "$PATH|$*"\n')
    fake.chmod(0o755)
    hook = tmp_path / "epilog"
    hook.write_text(conf.hook_script("epilog", tmp_path / "beoctl", Path("/c.toml")))
    hook.chmod(0o755)
    env = {"SLURM_JOB_COMMENT": "beolaunch:manifest=" + "a" * 64}
    out = subprocess.run([str(hook)], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{conf.HOOK_PATH}|-m launcher.slurm.hook --config /c.toml slurm epilog"


def test_hook_script_passes_a_job_without_a_manifest_at_once(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 3\n")  # would fail the hook if it ran
    fake.chmod(0o755)
    hook = tmp_path / "prolog"
    hook.write_text(conf.hook_script("prolog", tmp_path / "beoctl", Path("/c.toml")))
    hook.chmod(0o755)
    for env in ({}, {"SLURM_JOB_COMMENT": "my own comment"}):
        assert subprocess.run([str(hook)], env=env, capture_output=True).returncode == 0
    env = {"SLURM_JOB_COMMENT": "x beolaunch:manifest=" + "b" * 64}
    assert subprocess.run([str(hook)], env=env, capture_output=True).returncode == 3


def test_unknown_hook_stage_is_refused() -> None:
    with pytest.raises(ValueError, match="stage"):
        conf.hook_script("start", Path("/b"), Path("/c"))


def test_node_features_go_on_their_nodename_line(tmp_path: Path) -> None:
    nodes = [conf.SlurmNode("node1", "10.77.0.11", 2, 1000, ("beolaunch-rt-0123456789ab", "x"))]
    text = conf.cluster_conf(
        SlurmSettings(), CONTROLLER, nodes, SlurmPaths.of_state(tmp_path), None
    )
    assert _settings(text)["NodeName"] == [
        "node1 NodeAddr=10.77.0.11 NodeHostname=node1 CPUs=2 RealMemory=1000 "
        "Features=beolaunch-rt-0123456789ab,x State=UNKNOWN"
    ]
