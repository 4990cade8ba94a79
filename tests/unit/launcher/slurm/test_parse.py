"""Parsing Slurm 22.05.8 output; the fixtures were captured from it on the virtual cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.errors import SlurmOutputError
from launcher.slurm import parse

FIXTURES = Path(__file__).parent / "fixtures"


def _read(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("node[1-3,5],gpu7", ("node1", "node2", "node3", "node5", "gpu7")),
        ("n[08-10]", ("n08", "n09", "n10")),
        ("node1", ("node1",)),
        ("", ()),
        ("(null)", ()),
    ],
)
def test_expand_hostlist(text: str, names: tuple[str, ...]) -> None:
    assert parse.expand_hostlist(text) == names


def test_version_and_job_id() -> None:
    assert parse.version(_read("version.txt")) == "22.05.8"
    assert parse.sbatch_job_id("17\n") == 17
    assert parse.sbatch_job_id("17;cluster2\n") == 17
    with pytest.raises(SlurmOutputError):
        parse.sbatch_job_id("sbatch: error\n")


def test_squeue_json_running_pending_held_and_comment() -> None:
    jobs = {j.job_id: j for j in parse.squeue_json(_read("squeue_running.json"))}
    assert sorted(jobs) == [1, 2, 3, 4, 5]
    running = jobs[3]
    assert (running.state, running.nodes, running.exit_code) == (
        "RUNNING",
        ("node1", "node2"),
        None,
    )
    assert running.comment == "beolaunch manifest=abc123 with space"
    held = jobs[4]
    assert (held.state, held.reason, held.held, held.nodes) == ("PENDING", "JobHeldUser", True, ())


def test_squeue_json_exit_status_is_decoded_from_the_wait_status() -> None:
    jobs = {j.job_id: j for j in parse.squeue_json(_read("squeue.json"))}
    assert (jobs[5].state, jobs[5].exit_code, jobs[5].signal) == ("FAILED", 3, None)  # 768
    assert (jobs[3].state, jobs[3].exit_code, jobs[3].signal) == ("CANCELLED", None, 15)
    assert (jobs[1].state, jobs[1].exit_code, jobs[1].reason) == ("COMPLETED", 0, None)


def test_sinfo_json_states_flags_and_reason() -> None:
    nodes = {n.name: n for n in parse.sinfo_json(_read("sinfo_drain.json"))}
    assert (nodes["node1"].state, nodes["node1"].drained) == ("idle", False)
    node2 = nodes["node2"]
    assert (node2.state, node2.flags, node2.reason) == ("idle", ("DRAIN",), "Prolog error")
    assert (node2.address, node2.cpus, node2.drained) == ("10.91.7.12", 2, True)


def test_scontrol_show_job_keeps_a_comment_with_spaces_and_equals() -> None:
    job = parse.scontrol_job(_read("scontrol_running.txt"))
    assert (job.job_id, job.name, job.state, job.user_id) == (3, "wrap", "RUNNING", 0)
    assert job.nodes == ("node1", "node2")
    assert job.comment == "beolaunch manifest=abc123 with space"
    assert job.partition == "beolaunch"


def test_scontrol_show_job_held_and_failed() -> None:
    held = parse.scontrol_job(_read("scontrol_held.txt"))
    assert (held.state, held.reason, held.priority, held.held) == (
        "PENDING",
        "JobHeldUser",
        0,
        True,
    )
    failed = parse.scontrol_job(_read("scontrol_failed.txt"))
    assert (failed.state, failed.exit_code, failed.reason) == ("FAILED", 3, "NonZeroExitCode")
    done = parse.scontrol_job(_read("scontrol_completed.txt"))
    assert (done.state, done.exit_code, done.comment) == ("COMPLETED", 0, None)


def test_key_values_split_at_keys_only() -> None:
    kv = parse.key_values("   TRES=cpu=2,node=2 AllocNode:Sid=localhost:15 JobName=my job x=1\n")
    assert kv == {"TRES": "cpu=2,node=2", "AllocNode:Sid": "localhost:15", "JobName": "my job x=1"}


def test_jobcomp_lines() -> None:
    jobs = {j.job_id: j for j in parse.jobcomp(_read("jobcomp.txt"))}
    assert sorted(jobs) == [1, 2, 3, 4, 5]
    assert (jobs[2].name, jobs[2].nodes, jobs[2].state) == (
        "hostname",
        ("node1", "node2"),
        "COMPLETED",
    )
    assert (jobs[5].state, jobs[5].exit_code, jobs[5].user, jobs[5].user_id) == (
        "FAILED",
        3,
        "root",
        0,
    )
    assert jobs[3].start == "2026-11-25T14:13:56" and jobs[3].end == "2026-11-25T14:14:12"


@pytest.mark.parametrize(
    ("command", "text"),
    [
        ("squeue", "not json"),
        ("squeue", '{"errors": [], "nodes": []}'),
        ("squeue", '{"errors": [{"error": "x"}], "jobs": []}'),
        ("sinfo", '{"errors": [], "jobs": []}'),
    ],
)
def test_unexpected_json_is_an_output_error(command: str, text: str) -> None:
    fn = parse.squeue_json if command == "squeue" else parse.sinfo_json
    with pytest.raises(SlurmOutputError):
        fn(text)


def test_scontrol_without_job_id_is_an_output_error() -> None:
    with pytest.raises(SlurmOutputError):
        parse.scontrol_job("slurm_load_jobs error: Invalid job id specified\n")


def test_pyslurm_style_mappings() -> None:
    job = parse.job_from_mapping(
        {"job_id": 9, "name": "x", "job_state": "FAILED", "exit_code": "2:0", "nodes": "n[1-2]"}
    )
    assert (job.exit_code, job.signal, job.nodes) == (2, None, ("n1", "n2"))
    node = parse.node_from_mapping({"name": "n1", "state": "IDLE+DRAIN", "node_addr": "10.0.0.1"})
    assert (node.state, node.flags, node.address, node.drained) == (
        "idle",
        ("DRAIN",),
        "10.0.0.1",
        True,
    )
