"""The scheduler adapter: the command backend against stub Slurm commands, the
pyslurm backend against a stand-in module (pyslurm for Slurm 22.05 cannot be
installed here), and the backend choice."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest

from launcher.errors import SlurmCommandError, SlurmError
from launcher.slurm import adapter
from launcher.slurm.adapter import PySlurm, SlurmCli

FIXTURES = Path(__file__).parent / "fixtures"


def _stub(bindir: Path, name: str, stdout: str = "", status: int = 0, stderr: str = "") -> None:
    """A stand-in Slurm command: logs its argv and stdin as JSON, prints ``stdout``."""
    out = bindir / f"{name}.out"
    out.write_text(stdout)
    script = bindir / name
    log = bindir / "calls.jsonl"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"stdin = '' if sys.stdin.isatty() else sys.stdin.read()\n"
        f"open({str(log)!r}, 'a').write(json.dumps([sys.argv[0].rsplit('/', 1)[-1], "
        "*sys.argv[1:], stdin]) + '\\n')\n"
        f"sys.stdout.write(open({str(out)!r}).read())\n"
        f"sys.stderr.write({stderr!r})\n"
        f"sys.exit({status})\n"
    )
    script.chmod(0o755)


def _calls(bindir: Path) -> list[list[str]]:
    log = bindir / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    return d


def _cli(bindir: Path, jobcomp: Path | None = None) -> SlurmCli:
    return SlurmCli({"PATH": f"{bindir}:{os.environ['PATH']}", "SLURM_CONF": "/x"}, jobcomp)


def test_submit_passes_options_and_script_and_returns_the_id(bindir: Path) -> None:
    _stub(bindir, "sbatch", "42;c1\n")
    job_id = _cli(bindir).submit(["-N", "2", "--comment", "a b"], "#!/bin/sh\nhostname\n")
    assert job_id == 42
    assert _calls(bindir) == [
        ["sbatch", "--parsable", "-N", "2", "--comment", "a b", "#!/bin/sh\nhostname\n"]
    ]


def test_jobs_filters_squeue_json_itself(bindir: Path) -> None:
    # 22.05's squeue --json returns every job whatever -j says.
    _stub(bindir, "squeue", (FIXTURES / "squeue.json").read_text())
    jobs = _cli(bindir).jobs([3, 5, 99])
    assert [(j.job_id, j.state) for j in jobs] == [(3, "CANCELLED"), (5, "FAILED")]
    assert _calls(bindir)[0][:2] == ["squeue", "--json"]


def test_job_parses_scontrol_show_job(bindir: Path) -> None:
    _stub(bindir, "scontrol", (FIXTURES / "scontrol_held.txt").read_text())
    job = _cli(bindir).job(4)
    assert (job.job_id, job.held) == (4, True)
    assert _calls(bindir)[0][:4] == ["scontrol", "show", "job", "4"]


def test_failure_is_a_slurm_command_error_with_status_and_stderr(bindir: Path) -> None:
    _stub(bindir, "sbatch", status=1, stderr="sbatch: error: Invalid partition name specified\n")
    with pytest.raises(SlurmCommandError) as info:
        _cli(bindir).submit(["-p", "nopart", "--wrap", "true"])
    err = info.value
    assert err.argv[:2] == ["sbatch", "--parsable"] and err.status == 1
    assert "Invalid partition name" in err.stderr and "Invalid partition name" in str(err)


def test_missing_command_is_a_slurm_command_error(tmp_path: Path) -> None:
    cli = SlurmCli({"PATH": str(tmp_path)})
    with pytest.raises(SlurmCommandError) as info:
        cli.nodes()
    assert info.value.status == 127


def test_release_update_cancel_argv(bindir: Path) -> None:
    _stub(bindir, "scontrol")
    _stub(bindir, "scancel")
    cli = _cli(bindir)
    cli.release(7)
    cli.update(7, {"StartTime": "now"})
    cli.cancel(7, "USR1")
    assert [c[:-1] for c in _calls(bindir)] == [
        ["scontrol", "release", "7"],
        ["scontrol", "update", "JobId=7", "StartTime=now"],
        ["scancel", "--signal=USR1", "7"],
    ]
    with pytest.raises(SlurmError):
        cli.update(7, {"Start Time": "now"})


def test_finished_reads_the_jobcomp_file(bindir: Path, tmp_path: Path) -> None:
    jobcomp = tmp_path / "jobcomp.txt"
    jobcomp.write_text((FIXTURES / "jobcomp.txt").read_text())
    assert [j.job_id for j in _cli(bindir, jobcomp).finished([2, 4])] == [2, 4]
    assert _cli(bindir, tmp_path / "none.txt").finished() == []
    with pytest.raises(SlurmError, match="jobcomp"):
        _cli(bindir).finished()


def test_run_returns_the_step_result_even_when_it_fails(bindir: Path) -> None:
    _stub(bindir, "srun", "node1\n", status=3, stderr="srun: error: node1: task 0: Exited 3\n")
    step = _cli(bindir).run(["-N1", "hostname"])
    assert (step.returncode, step.stdout, step.command) == (
        3,
        "node1\n",
        shlex.join(["srun", "-N1", "hostname"]),
    )


class FakePyslurm:
    """Stands in for ``import pyslurm`` (22.5 API: job().get(), node().get())."""

    PyslurmError = RuntimeError

    def __init__(self, version: str, api: tuple[int, int, int] | None = None) -> None:
        self._version = version
        if api is not None:
            self.slurm_api_version = lambda: api

    def version(self) -> str:
        return self._version

    def job(self) -> Any:
        class Job:
            def get(self) -> dict[int, dict[str, Any]]:
                return {
                    8: {"job_id": 8, "name": "b", "job_state": "RUNNING", "nodes": "node[1-2]"},
                    7: {"job_id": 7, "name": "a", "job_state": "PENDING", "priority": 0},
                }

            def find_id(self, job_id: str) -> list[dict[str, Any]]:
                if job_id == "404":
                    raise RuntimeError("Invalid job id specified")
                return [self.get()[int(job_id)]]

        return Job()

    def node(self) -> Any:
        class Node:
            def get(self) -> dict[str, dict[str, Any]]:
                return {"node1": {"name": "node1", "state": "IDLE+DRAIN", "reason": "Prolog error"}}

        return Node()


def test_backend_without_pyslurm_is_the_commands() -> None:
    try:
        import pyslurm  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        assert isinstance(adapter.backend({"PATH": "/nonexistent"}), SlurmCli)
    else:  # pragma: no cover - only where pyslurm is installed
        pytest.skip("pyslurm is installed here: backend() may pick it")


def test_backend_picks_pyslurm_only_for_the_running_release(bindir: Path) -> None:
    _stub(bindir, "sinfo", "slurm-wlm 22.05.8\n")
    env = _cli(bindir).env
    # pyslurm numbers its releases 22.5.x for Slurm 22.05.
    assert isinstance(adapter.backend(env, module=FakePyslurm("22.5.3")), PySlurm)
    assert isinstance(adapter.backend(env, module=FakePyslurm("25.11.0")), SlurmCli)
    assert isinstance(adapter.backend(env, module=FakePyslurm("22.5.3", api=(23, 2, 1))), SlurmCli)


def test_pyslurm_backend_answers_with_the_same_types(bindir: Path) -> None:
    sched = PySlurm(FakePyslurm("22.5.3"), _cli(bindir))
    jobs = sched.jobs()
    assert [(j.job_id, j.state) for j in jobs] == [(7, "PENDING"), (8, "RUNNING")]
    assert jobs[0].held and jobs[1].nodes == ("node1", "node2")
    assert sched.job(8).name == "b"
    node = sched.nodes()[0]
    assert (node.name, node.drained, node.reason) == ("node1", True, "Prolog error")
    with pytest.raises(SlurmError, match="404"):
        sched.job(404)


def test_real_pyslurm_matches_the_running_slurm() -> None:
    pyslurm = pytest.importorskip(
        "pyslurm",
        reason="pyslurm for Slurm 22.05 is not on PyPI (only 25.11, 17.11, 18.8): not installable",
    )
    sched = adapter.backend()
    assert isinstance(sched, PySlurm), f"pyslurm {pyslurm.version()} does not match sinfo"
