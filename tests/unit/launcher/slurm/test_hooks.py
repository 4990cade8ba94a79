"""The prolog's and epilog's reading of slurmd's environment (no agent here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.errors import HookEnvironmentError
from launcher.slurm import epilog, prolog
from launcher.slurm.settings import SlurmSettings, agent_socket

MANIFEST = "d" * 64
ENV = {
    "SLURM_JOB_ID": "12",
    "SLURM_JOB_UID": "1000",
    "SLURM_JOB_GID": "100",
    "SLURM_JOB_USER": "ann",
    "SLURM_JOB_WORK_DIR": "/home/ann",
    "SLURMD_NODENAME": "node1",
    "SLURM_JOB_COMMENT": f"run 3 beolaunch:manifest={MANIFEST}",
}


def test_manifest_is_found_only_as_a_whole_id() -> None:
    assert prolog.manifest_of(ENV["SLURM_JOB_COMMENT"]) == MANIFEST
    assert prolog.manifest_of(None) is None
    assert prolog.manifest_of("beolaunch:manifest=abc") is None
    assert prolog.manifest_of(f"beolaunch:manifest={MANIFEST}0") is None


def test_admit_request_carries_the_jobs_identity() -> None:
    doc = prolog.admit_request(ENV, 10.0)
    assert doc == {
        "op": "admit",
        "slurm_job": 12,
        "manifest": MANIFEST,
        "uid": 1000,
        "gid": 100,
        "user": "ann",
        "work_dir": "/home/ann",
        "nodes": None,
        "timeout": 10.0,
    }


def test_admit_request_carries_the_jobs_sorted_node_list() -> None:
    env = {**ENV, "SLURM_NODELIST": "node[3-4,1],gpu2"}
    assert prolog.admit_request(env, 10.0)["nodes"] == [  # type: ignore[index]
        "gpu2",
        "node1",
        "node3",
        "node4",
    ]
    assert prolog.nodes_of({**ENV, "SLURM_NODELIST": "node[x-2]"}) is None


def test_a_job_without_a_manifest_contacts_nothing(tmp_path: Path) -> None:
    # no config exists at that path: reading it would fail
    env = {k: v for k, v in ENV.items() if k != "SLURM_JOB_COMMENT"}
    assert prolog.run(env, tmp_path / "missing.toml") is None
    assert epilog.run({**env, "SLURM_JOB_COMMENT": "mine"}, tmp_path / "missing.toml") is False


def test_a_missing_uid_is_named() -> None:
    env = {k: v for k, v in ENV.items() if k != "SLURM_JOB_UID"}
    with pytest.raises(HookEnvironmentError, match="SLURM_JOB_UID"):
        prolog.admit_request(env, 1.0)


@pytest.mark.parametrize(
    ("env", "status"),
    [
        ({"SLURM_JOB_EXIT_CODE2": "3:0"}, 3),
        ({"SLURM_JOB_EXIT_CODE2": "0:15"}, 143),
        ({"SLURM_JOB_EXIT_CODE": "768"}, 3),
        ({"SLURM_JOB_EXIT_CODE": "9"}, 137),
        ({}, 0),
    ],
)
def test_epilog_status_is_what_a_shell_reports(env: dict[str, str], status: int) -> None:
    assert epilog.exit_status(env) == status


def test_agent_socket_defaults_to_the_virtual_clusters() -> None:
    state = Path("/srv/beo")
    assert agent_socket(SlurmSettings(), state, "node2") == "/srv/beo/cluster/node2/agent.sock"
    custom = SlurmSettings(agent_socket="/run/beo/%n.sock")
    assert agent_socket(custom, state, "node2") == "/run/beo/node2.sock"
